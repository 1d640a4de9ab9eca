"""Deployment: exported models (ONNX, OpenVINO IR, TorchScript), inference backends, the model registry.

Submodules are imported where used (``nnseg.deploy.export``, ``nnseg.inference.backends``): the optional
runtimes (onnxruntime, openvino) load only when a command asks for them.
"""
