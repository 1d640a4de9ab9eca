"""Deployment: exported models (ONNX, OpenVINO IR), quantization, the model registry and its pyfunc model.

Submodules are imported where used (``nnseg.deploy.export``, ``nnseg.inference.backends``): the optional
runtimes (onnxruntime, openvino) load only when a command asks for them.
"""
