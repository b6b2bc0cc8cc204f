"""Offline model converters: dlib's ``.dat`` files and MediaPipe's ``.tflite`` files to the
pinned model files the runtime loads.

Run by ``devicebio models build`` (through :mod:`devicebio.vision.models`), never imported at
authentication time: they need onnx and tflite2onnx, and the runtime reads only the built
files (whose formats are in :mod:`devicebio.vision.formats`). A test checks that the runtime
stages load without this package.
"""
