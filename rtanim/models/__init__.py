"""What paints the new expression: the warp geometry, the refine net and its colour ops, GANimation nets, the mouth reference (docs/ARCHITECTURE.md, step 5)."""
