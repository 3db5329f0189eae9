"""The public surface is deliberate: adding or removing a name is a visible change."""

import registry


def test_public_surface() -> None:
    assert sorted(registry.__all__) == registry.__all__
    for name in registry.__all__:
        assert hasattr(registry, name), name
    assert {"Wanlora", "RegistryService", "inspect_lora", "sync_comfyui", "WanloraError"} <= set(registry.__all__)


def test_registry_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, registry, registry.sync.comfyui, registry.domain.notes, registry.files.synth; "
        "bad = [m for m in ('fastapi', 'typer', 'torch', 'diffusers', 'peft') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
