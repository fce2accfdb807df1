"""fxq's own modules: fused float units and the modules lowering puts in a quantized graph."""
