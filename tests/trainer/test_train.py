"""The whole training path on tiny random WAN models, on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from registry.domain.errors import InvalidInput  # noqa: E402
from registry.domain.wan import BASE_MODELS  # noqa: E402
from registry.files.ingest import inspect_lora  # noqa: E402
from trainer.config import TrainConfig, load_config  # noqa: E402
from trainer.models import build_tiny_transformer  # noqa: E402
from trainer.synthdata import make_image_dataset, make_video_dataset  # noqa: E402
from trainer.train import train  # noqa: E402


def tiny(tmp: Path, **kw: object) -> TrainConfig:
    ds = kw.pop("dataset", None) or make_image_dataset(tmp / "ds", count=10, size=32)
    base = {
        "dataset": ds, "lora": "sarah", "goal": "character", "tiny": True, "base_model": "wan-tiny",
        "resolution": 32, "rank": 4, "epochs": 4, "checkpoint_every": 5, "output": tmp / "out",
        "learning_rate": 5e-3, "save_dtype": "fp32",
    }  # fmt: skip
    return load_config(None, **{**base, **kw})


def test_tiny_run_writes_loadable_canonical_checkpoints(tmp_path: Path) -> None:
    run = train(tiny(tmp_path))
    assert run.total_steps == 20 and len(run.losses) == 20
    assert [c.step for c in run.checkpoints] == [5, 10, 15, 20]
    last = run.checkpoints[-1].files["single"]
    ins = inspect_lora(last, BASE_MODELS["wan-tiny"])
    assert ins.source_format.value == "canonical" and ins.rank == 4 and ins.alpha == 4.0
    assert ins.metadata["ss_network_dim"] == "4" and ins.metadata["wanlora.dataset_hash"] == run.dataset.dataset_hash
    assert set(run.checkpoints[-1].val_loss) == {"0.125", "0.375", "0.625", "0.875"}  # per timestep bucket
    assert run.plot is not None and run.plot.stat().st_size > 10_000


def test_saved_lora_through_diffusers_loading_reproduces_the_trained_model(tmp_path: Path) -> None:
    from diffusers.loaders import WanLoraLoaderMixin
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    cfg = tiny(tmp_path)
    run = train(cfg)
    checkpoint = run.checkpoints[-1]
    state = torch.load(checkpoint.path / "state.pt", weights_only=True)
    # the trained model: the base plus the adapter exactly as training left it
    trained = build_tiny_transformer(cfg.seed + 1)
    trained.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    set_peft_model_state_dict(trained, state["adapters"]["single"])
    # a fresh model with the saved file, through diffusers' own Wan LoRA loading (original Wan key names)
    fresh = build_tiny_transformer(cfg.seed + 1)
    lora = WanLoraLoaderMixin.lora_state_dict(str(checkpoint.files["single"]))
    fresh.load_lora_adapter(lora, adapter_name="wanlora", prefix="transformer")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 1, 4, 4, generator=generator)
    text = torch.randn(1, 7, 32, generator=generator)
    t = torch.tensor([400.0])
    with torch.no_grad():
        a = trained(hidden_states=x, timestep=t, encoder_hidden_states=text).sample
        b = fresh(hidden_states=x, timestep=t, encoder_hidden_states=text).sample
        base = build_tiny_transformer(cfg.seed + 1)(hidden_states=x, timestep=t, encoder_hidden_states=text).sample
    assert not torch.allclose(a, base, atol=1e-4)  # the LoRA does something
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_resumed_run_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    ds = make_image_dataset(tmp_path / "ds", count=10, size=32)
    whole = train(tiny(tmp_path / "a", dataset=ds))
    cfg = tiny(tmp_path / "b", dataset=ds)
    first = train(cfg, run_dir=tmp_path / "b-run", stop_after=10)
    assert first.checkpoints[-1].step == 10
    resumed = train(cfg, run_dir=tmp_path / "b-run", resume=first.checkpoints[-1].path)
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-6)
    a = torch.load(whole.checkpoints[-1].path / "state.pt", weights_only=True)["adapters"]["single"]
    b = torch.load(resumed.checkpoints[-1].path / "state.pt", weights_only=True)["adapters"]["single"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a14b_pairs_train_each_expert_on_its_timesteps(tmp_path: Path) -> None:
    run = train(tiny(tmp_path, base_model="wan-tiny-a14b", epochs=2))
    files = run.checkpoints[-1].files
    assert set(files) == {"high_noise", "low_noise"}
    for path in files.values():
        inspect_lora(path, BASE_MODELS["wan-tiny-a14b"])


def test_video_clips_train(tmp_path: Path) -> None:
    ds = make_video_dataset(tmp_path / "vds", count=5, size=32, frames=12, fps=24)
    run = train(tiny(tmp_path, dataset=ds, frames=5, epochs=2, checkpoint_every=100))
    assert run.checkpoints and run.dataset.kind == "videos"


def test_bad_dataset_is_refused_before_anything_runs(tmp_path: Path) -> None:
    ds = make_image_dataset(tmp_path / "ds", count=4, size=32)
    (ds / "captions" / "001.txt").write_text("")
    with pytest.raises(InvalidInput, match=r"001\.txt is empty"):
        train(tiny(tmp_path, dataset=ds))
    assert not (tmp_path / "out").exists()


def test_candidates_are_registered_with_their_record(tmp_path: Path) -> None:
    from registry.backends.local import Wanlora
    from registry.blobs.local import LocalStore
    from registry.db.engine import Database
    from trainer.register import register_run

    wl = Wanlora(db=Database(f"sqlite:///{tmp_path / 'r.db'}"), store=LocalStore(tmp_path / "store"), actor="t")
    cfg = tiny(tmp_path)
    run = train(cfg)
    versions = register_run(run, wl)
    assert [v.version for v in versions] == ["0.1.0-step.10", "0.1.0-step.15", "0.1.0-step.20"]  # from 50% on
    v = versions[-1]
    assert v.status.value == "testing" and v.dataset_hash == run.dataset.dataset_hash
    assert v.dataset_summary["samples"] == 10 and v.hyperparameters["rank"] == 4
    assert v.hyperparameters["training"]["checkpoint_step"] == 20 and v.hyperparameters["training"]["loss_curve"]
    assert v.training_date is not None and "First version" in v.changelog
    second = register_run(train(tiny(tmp_path / "again", dataset=cfg.dataset, learning_rate=2e-3)), wl)
    assert second[0].version == "0.2.0-step.10" and "learning_rate 0.005 → 0.002" in second[0].changelog


def test_wanlora_train_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("WANLORA_HOME", str(tmp_path / "home"))
    ds = make_image_dataset(tmp_path / "ds", count=10, size=32)
    common = ["train", "--dataset", str(ds), "--lora", "sarah", "--goal", "style", "--tiny", "--base-model", "wan-tiny",
              "--resolution", "32", "--rank", "4", "--epochs", "2", "--checkpoint-every", "5", "--output", str(tmp_path / "runs")]  # fmt: skip
    result = CliRunner().invoke(app, [*common, "--preflight-only", "--json"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, [*common, "--gpu-memory", "1", "--no-register"])
    assert result.exit_code == 2 and "GB of GPU memory" in result.output and "--force" in result.output
    result = CliRunner().invoke(app, [*common, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["runs"]["run"]["registered"] == ["0.1.0-step.5", "0.1.0-step.10"]


def test_training_video_clips_from_a_local_diffusers_folder_with_a_umt5_tokenizer(tmp_path: Path) -> None:
    """The non-tiny path, as with real WAN weights: transformer, VAE, UMT5 encoder and a T5 (SentencePiece
    unigram) tokenizer load from a local folder, never from a hub; prompts are cleaned, end in </s> and
    reach the DiT zero-padded to 512 tokens, as in diffusers' WAN pipelines."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import T5TokenizerFast

    from trainer.dataset import check_dataset
    from trainer.models import load_models

    ds = make_video_dataset(tmp_path / "vds", count=5, size=32, frames=12, fps=24)
    folder = tmp_path / "Wan-Local-Diffusers"
    tiny_models = load_models(tiny(tmp_path, dataset=ds))
    tiny_models.transformers["single"].save_pretrained(folder / "transformer")
    tiny_models.vae.save_pretrained(folder / "vae")
    tiny_models.text_encoder.save_pretrained(folder / "text_encoder")
    captions = [s.caption for s in check_dataset(ds).samples]
    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(captions, vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    T5TokenizerFast(
        tokenizer_object=unigram._tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    ).save_pretrained(folder / "tokenizer")

    config = tiny(tmp_path / "local", dataset=ds, tiny=False, model_path=folder, frames=5, epochs=1)
    models = load_models(config)
    assert models.text_length == 512
    ids, mask = models.tokenize(["  watercolor scene 1,   smooth camera pan "])
    assert ids.shape == (1, 512) and ids[0, int(mask.sum()) - 1] == 1  # ends in </s> (id 1), then <pad>
    [embedding] = models.encode_prompts(["watercolor scene 1, smooth camera pan"])
    assert embedding.shape[0] == int(mask.sum())  # cut at the prompt's end; the loop pads it back to 512

    run = train(config)
    assert run.dataset.kind == "videos" and run.checkpoints and run.checkpoints[-1].files["single"].is_file()
    inspect_lora(run.checkpoints[-1].files["single"], BASE_MODELS["wan-tiny"])
    with pytest.raises(InvalidInput, match="is not a folder"):
        train(tiny(tmp_path / "missing", tiny=False, model_path=tmp_path / "nowhere", epochs=1))


def test_sweep_trains_and_registers_the_guides_trio(tmp_path: Path) -> None:
    from cli.train import run_training
    from registry.backends.local import Wanlora
    from registry.blobs.local import LocalStore
    from registry.db.engine import Database

    wl = Wanlora(db=Database(f"sqlite:///{tmp_path / 'r.db'}"), store=LocalStore(tmp_path / "store"), actor="t")
    ds = make_image_dataset(tmp_path / "ds", count=10, size=32)
    overrides = {"dataset": ds, "lora": "trio", "goal": "style", "tiny": True, "base_model": "wan-tiny",
                 "resolution": 32, "max_steps": 4, "checkpoint_every": 4, "output": tmp_path / "runs"}  # fmt: skip
    run_training(None, overrides, wl, sweep=True, preflight_only=False, resume=None, register=True, as_json=True)
    with wl.registry(write=False) as reg:
        versions = reg.get_lora(project="default", name="trio").versions
    ranks = {v.version: v.hyperparameters["rank"] for v in versions}
    lrs = sorted(v.hyperparameters["learning_rate"] for v in versions)
    assert ranks == {"0.1.0-step.4": 64, "0.2.0-step.4": 64, "0.3.0-step.4": 96}
    assert lrs == [8e-5, 1.2e-4, 1.5e-4]


def test_two_processes_under_accelerate_train_what_one_process_trains_at_twice_the_batch(tmp_path: Path) -> None:
    """`accelerate launch` with two processes (gloo on the CPU, as NCCL on GPUs): each takes half of
    every global batch and DDP averages the gradients, so the result is the one-process batch-2 run;
    only the main process writes checkpoints and registers."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from safetensors.torch import load_file

    ds = make_image_dataset(tmp_path / "ds", count=9, size=32)  # captions of one length: no padding differs
    settings = {"epochs": 2, "checkpoint_every": 100, "validation_fraction": 0.0, "gradient_accumulation_steps": 1}
    one = train(tiny(tmp_path / "one", dataset=ds, batch_size=2, **settings), run_dir=tmp_path / "one-run")

    (tmp_path / "two.toml").write_text(
        "\n".join(
            f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}"
            for k, v in tiny(tmp_path / "two", dataset=ds, batch_size=1, **settings).model_dump().items()
            if v is not None
        )
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WANLORA_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]  # fmt: skip
    done = subprocess.run(
        [*launch, "-m", "cli", "train", "--config", str(tmp_path / "two.toml"), "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)  # one JSON document: only the main process printed
    run = summary["runs"]["run"]
    assert run["processes"] == 2 and run["steps"] == one.total_steps == 10  # 9 samples / global batch 2
    assert run["registered"] == ["0.1.0-step.10"]

    two_file = Path(run["run_dir"]) / "checkpoints" / "step-000010" / "single.safetensors"
    ours, theirs = load_file(str(one.checkpoints[-1].files["single"])), load_file(str(two_file))
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=1e-4, atol=1e-5, msg=key)
    assert max(float(theirs[k].abs().max()) for k in theirs if ".lora_B." in k) > 0  # it did train (B starts at 0)


def test_base_weights_go_to_the_training_precision_but_the_fp32_modules_stay() -> None:
    from trainer.models import place

    model = build_tiny_transformer(0)
    place(model, torch.device("cpu"), torch.bfloat16)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["blocks.0.attn1.to_q.weight"] == torch.bfloat16
    assert dtypes["blocks.0.scale_shift_table"] == torch.float32  # kept, as diffusers keeps it
    assert all(d == torch.float32 for n, d in dtypes.items() if ".time_embedder." in n)
