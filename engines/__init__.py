"""Inference engines behind one interface (``engine.run(crops, aus) -> Outputs``), ONNX export,
TensorRT / torch2trt builds and the engine cache. Start with :func:`engines.select.select_engine`."""
