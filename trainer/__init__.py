"""wanlora's bundled trainer: dataset check and preparation, presets, memory preflight, LoRA training on
the WAN DiT (diffusers + peft), diagnostics, and registration of the candidates. torch, diffusers and
peft come with the ``train`` extra and are imported only by the modules that need them."""
