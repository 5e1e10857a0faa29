"""Strategy objects and configs (FSDP2, FSDP1, DeepSpeed, DDP), the DeepSpeed loss normalisation, launching.

Two-process training runs are in test_distributed.py; GPU-only runs at the end of this file (marked ``gpu``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from torch.distributed.tensor import DTensor
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from lit_ft.config import ConfigError, validate_config
from lit_ft.models import LoRA, decoder_layer_classes
from lit_ft.modules import SFTModule
from lit_ft.strategies import (
    DDPStrategy,
    FSDP1Strategy,
    FSDP2Strategy,
    HydraJobLauncher,
    deepspeed_config,
    end_processes,
    hydra_job_command,
)
from lit_ft.strategies.fsdp2 import shard_model
from lit_ft.strategies.launch import LAUNCH_ENV
from lit_ft.utils.distributed import unwrapped_name
from lit_ft.utils.lightning_compat import fsdp_state_dict_type
from tests.support.helpers import REPO, compose_config


# --- config wiring -------------------------------------------------------------------------------------------
def test_default_stays_single_device_and_strategies_compose(tmp_path):
    cfg = compose_config([], output_dir=tmp_path)
    assert cfg.trainer.strategy == "auto" and cfg.trainer.num_nodes == 1 and cfg.trainer.devices == 1
    ddp = instantiate(compose_config(["strategy=ddp"], output_dir=tmp_path).trainer.strategy)
    assert isinstance(ddp, DDPStrategy) and ddp._ddp_kwargs["find_unused_parameters"] is False
    fsdp = instantiate(
        compose_config(
            ["strategy=fsdp", "strategy.param_dtype=bfloat16", "strategy.reduce_dtype=float32"], output_dir=tmp_path
        ).trainer.strategy
    )
    assert isinstance(fsdp, FSDP2Strategy) and fsdp.reshard_after_forward and not fsdp.activation_checkpointing
    assert (fsdp.mp_policy.param_dtype, fsdp.mp_policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    fsdp1 = instantiate(compose_config(["strategy=fsdp1"], output_dir=tmp_path).trainer.strategy)
    assert isinstance(fsdp1, FSDP1Strategy) and fsdp_state_dict_type(fsdp1) == "full"
    assert fsdp1.kwargs["limit_all_gathers"] and fsdp1.kwargs["use_orig_params"]  # LoRA needs original params
    trainer = L.Trainer(strategy=fsdp, accelerator="cpu", devices=2, logger=False)
    assert trainer.strategy is fsdp and trainer.num_devices == 2
    for name in ("ddp", "fsdp"):  # train() validates first
        validate_config(compose_config([f"strategy={name}", "model=tiny"], output_dir=tmp_path))
    for name in ("fsdp1", "deepspeed_zero2", "deepspeed_zero3"):  # CUDA only: refused at once without a GPU
        cfg = compose_config([f"strategy={name}", "model=tiny", "trainer=gpu"], output_dir=tmp_path)
        if torch.cuda.is_available():
            validate_config(cfg)
        else:
            with pytest.raises(ConfigError, match="runs on CUDA GPUs only"):
                validate_config(cfg)


def test_deepspeed_configs_compose_from_trainer_and_data_values(tmp_path):
    for name, stage, offload in (("deepspeed_zero2", 2, False), ("deepspeed_zero3", 3, False)):
        cfg = compose_config([f"strategy={name}", "data.batch_size=6"], output_dir=tmp_path)
        assert (cfg.strategy.stage, cfg.strategy.offload_parameters, cfg.strategy.micro_batch_size) == (
            stage,
            offload,
            6,
        )
        assert cfg.module.optimizer._target_ == "torch.optim.AdamW"
    offload = compose_config(["strategy=deepspeed_zero3_offload"], output_dir=tmp_path)
    assert offload.strategy.stage == 3 and offload.strategy.offload_optimizer and offload.strategy.offload_parameters
    assert offload.module.optimizer._target_ == "deepspeed.ops.adam.DeepSpeedCPUAdam"
    assert offload.module.optimizer.lr == 2e-5  # the module's other optimizer settings stay


def test_slurm_launcher_takes_nodes_tasks_and_gpus_from_the_trainer(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install 'lit-ft[slurm]'")
    from hydra import compose, initialize_config_dir

    os.environ.setdefault("LIT_FT_ROOT", str(REPO))
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer=gpu", "trainer.num_nodes=4", "trainer.devices=8"],
            return_hydra_config=True,
        )
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    assert (launcher.params["nodes"], launcher.params["tasks_per_node"], launcher.params["gpus_per_node"]) == (4, 8, 8)


# --- DeepSpeed -------------------------------------------------------------------------------------------------
def test_deepspeed_config_values():
    config = deepspeed_config(
        stage=3,
        precision="bf16-mixed",
        micro_batch_size=4,
        accumulate_grad_batches=8,
        gradient_clip_val=1.0,
        offload_optimizer=True,
        offload_parameters=True,
        world_size=16,
    )
    assert config == {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 8,
        "train_batch_size": 4 * 8 * 16,
        "gradient_clipping": 1.0,
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
            "offload_optimizer": {"device": "cpu", "pin_memory": True},
            "offload_param": {"device": "cpu", "pin_memory": True},
        },
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
    }
    fp16 = deepspeed_config(stage=2, precision="16-mixed", micro_batch_size=2, gradient_clip_val=None)
    assert fp16["fp16"]["enabled"] and fp16["fp16"]["loss_scale"] == 0  # 0: dynamic loss scaling
    assert not fp16["bf16"]["enabled"] and fp16["gradient_clipping"] == 0.0 and "train_batch_size" not in fp16
    assert fp16["zero_optimization"] == {"stage": 2, "overlap_comm": True, "contiguous_gradients": True}
    fp32 = deepspeed_config(stage=2, precision="32-true", micro_batch_size=1)
    assert not fp32["bf16"]["enabled"] and not fp32["fp16"]["enabled"]
    with pytest.raises(ValueError, match="stage 3"):
        deepspeed_config(stage=2, precision="bf16-mixed", micro_batch_size=1, offload_parameters=True)
    with pytest.raises(ValueError, match="precision"):
        deepspeed_config(stage=2, precision="64-true", micro_batch_size=1)
    with pytest.raises(ValueError, match="stage"):
        deepspeed_config(stage=4, precision="bf16-mixed", micro_batch_size=1)


def test_deepspeed_strategy_generates_its_config_from_the_trainer(tiny_model):
    pytest.importorskip("deepspeed", reason="optional extra: pip install 'lit-ft[deepspeed]'")
    from lit_ft.strategies import DeepSpeedStrategy

    strategy = DeepSpeedStrategy(stage=3, micro_batch_size=4, reduce_bucket_size=123, logging_level=30)
    trainer = L.Trainer(
        strategy=strategy,
        accelerator="cpu",
        devices=1,
        precision="bf16-mixed",
        accumulate_grad_batches=4,
        gradient_clip_val=0.5,
        logger=False,
    )
    module = SFTModule(model=lambda: tiny_model)
    module.trainer = trainer
    strategy.connect(module)
    strategy._format_config()
    expected = deepspeed_config(
        stage=3, precision="bf16-mixed", micro_batch_size=4, accumulate_grad_batches=4, gradient_clip_val=0.5
    )
    ours = {**expected, "train_batch_size": 16}
    # every value the run sets is in the config
    assert OmegaConf.to_container(OmegaConf.merge(strategy.config, ours)) == strategy.config
    assert strategy.config["zero_optimization"]["reduce_bucket_size"] == 123  # a keyword argument kept
    assert "aio" in strategy.config and strategy.config["zero_optimization"]["stage"] == 3
    assert strategy.zero_stage_3 and strategy.handles_gradient_accumulation
    assert isinstance(strategy.launcher, HydraJobLauncher)


# --- FSDP1 -----------------------------------------------------------------------------------------------------
def test_fsdp1_policies_name_the_decoder_layer_class_of_the_built_model(tiny_model):
    strategy = FSDP1Strategy(activation_checkpointing=True)
    module = SFTModule(model=lambda: tiny_model)
    module.configure_model()
    strategy.prepare(module)
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    assert strategy.sharding_strategy.name == "FULL_SHARD"
    unwrapped = FSDP1Strategy(wrap_decoder_layers=False)
    unwrapped.prepare(module)
    assert "auto_wrap_policy" not in unwrapped.kwargs and not unwrapped._activation_checkpointing_kwargs

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100))
    assert {c.__name__ for c in decoder_layer_classes(gpt2)} == {"GPT2Block"}  # found, not hard-coded


def test_fsdp1_refuses_sharded_state_dicts_for_slim_checkpoints(tiny_model):
    lora = SFTModule(model=lambda: tiny_model, adapter=LoRA(r=2))
    lora.configure_model()
    with pytest.raises(ValueError, match="state_dict_type=full"):
        FSDP1Strategy(state_dict_type="sharded").prepare(lora)
    FSDP1Strategy(state_dict_type="full").prepare(lora)


# --- FSDP2 on one process --------------------------------------------------------------------------------------
@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield torch.distributed.device_mesh.init_device_mesh("cpu", (1,))
    dist.destroy_process_group()


def test_fsdp2_shards_each_decoder_layer_with_checkpointing_and_keeps_the_numbers(one_process_group, tiny_model):
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy

    reference = LoRA(r=2, dropout=0.0)(tiny_model)
    sharded = LoRA(r=2, dropout=0.0)(type(tiny_model)(tiny_model.config))
    sharded.load_state_dict(reference.state_dict())
    names = [n for n, _ in reference.named_parameters()]
    shard_model(sharded, one_process_group, MixedPrecisionPolicy(), OffloadPolicy(), True, True)
    shard_model(sharded, one_process_group, MixedPrecisionPolicy(), OffloadPolicy(), True, True)  # idempotent

    layers = sharded.base_model.model.model.layers
    assert all(isinstance(layer, CheckpointWrapper) for layer in layers)  # recomputed in backward
    assert all(isinstance(layer._checkpoint_wrapped_module, FSDPModule) for layer in layers)  # one FSDP unit each
    assert isinstance(sharded, FSDPModule) and all(isinstance(p, DTensor) for p in sharded.parameters())
    assert [unwrapped_name(n) for n, _ in sharded.named_parameters()] == names  # checkpoint filters still match
    ids = torch.randint(5, 500, (2, 7))
    reference(input_ids=ids).logits.square().mean().backward()
    logits = sharded(input_ids=ids).logits
    logits.square().mean().backward()
    torch.testing.assert_close(logits, reference(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    grads = {unwrapped_name(n): p.grad.full_tensor() for n, p in sharded.named_parameters() if p.requires_grad}
    for name, parameter in reference.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(grads[name], parameter.grad, atol=1e-5, rtol=1e-4)


def test_fsdp2_shards_a_head_with_no_layers_whole(one_process_group):
    # online RL's value head beside the policy: no decoder layers to find, one FSDP unit
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, OffloadPolicy

    head = torch.nn.Linear(4, 1)
    hidden = torch.randn(3, 4)
    expected = head(hidden)
    shard_model(head, one_process_group, MixedPrecisionPolicy(), OffloadPolicy(), True, True)
    assert isinstance(head, FSDPModule) and all(isinstance(p, DTensor) for p in head.parameters())
    torch.testing.assert_close(head(hidden), expected)


def test_module_losses_under_fsdp2_equal_the_unsharded_ones(one_process_group, tokenizer):
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy

    from lit_ft.data import Collator
    from lit_ft.models import tiny_llama

    batch = Collator(tokenizer.pad_token_id)(
        [
            {"input_ids": [11, 12, 13, 14, 15], "labels": [-100, -100, 13, 14, 15], "task_ids": [0] * 5},
            {"input_ids": [21, 22, 23], "labels": [-100, 22, 23], "task_ids": [1] * 3},
        ]
    )
    plain, sharded = (SFTModule(model=lambda: tiny_llama(tokenizer, seed=0)) for _ in range(2))
    for module in (plain, sharded):
        module.configure_model()
    shard_model(sharded.model, one_process_group, MixedPrecisionPolicy(), OffloadPolicy(), True, False)
    expected, got = plain.token_losses(batch), sharded.token_losses(batch)  # head_on_loss_tokens is on by default
    mask = expected["loss_mask"].bool()
    assert torch.equal(got["loss_mask"].bool(), mask) and int(mask.sum()) == 5
    torch.testing.assert_close(got["per_token_loss"][mask], expected["per_token_loss"][mask], atol=1e-5, rtol=1e-5)


# --- launching -------------------------------------------------------------------------------------------------
def test_multirun_children_run_the_current_job_not_the_sweep(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["strategy=ddp", "seed=2"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(tmp_path / "sweep" / "1")
        cfg.hydra.job.name = "train"
    HydraConfig.instance().set_config(cfg)
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "strategy=ddp", "seed=1,2"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)  # as under `python train.py`
    try:
        command, cwd = hydra_job_command(1)
        assert command[1].endswith("train.py") and "-m" not in command and "seed=1,2" not in command
        assert command[2:] == [
            "--config-name=train",
            "strategy=ddp",
            "seed=2",
            f'hydra.run.dir="{tmp_path / "sweep" / "1"}"',
            "hydra.job.name=train_rank1",
            "hydra.output_subdir=null",
        ]
        assert cwd == cfg.hydra.runtime.cwd
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
        single, _ = hydra_job_command(1)
        assert single == command  # a single run's children are built from the job as well (never by recursion)
    finally:
        HydraConfig.instance().cfg = None


def test_end_processes_waits_for_children_and_clears_the_launch_environment(monkeypatch):
    waited = []
    launcher = HydraJobLauncher(cluster_environment=None, num_processes=2, num_nodes=1)
    launcher.procs = [SimpleNamespace(wait=lambda: waited.append(True))]
    for key in LAUNCH_ENV:
        monkeypatch.setenv(key, "1")
    end_processes(SimpleNamespace(strategy=SimpleNamespace(launcher=launcher)))
    assert waited == [True] and not any(key in os.environ for key in LAUNCH_ENV)
    monkeypatch.setenv("LOCAL_RANK", "3")  # a process started by someone else (torchrun, SLURM) keeps its env
    end_processes(SimpleNamespace(strategy=SimpleNamespace(launcher=None)))
    assert os.environ["LOCAL_RANK"] == "3"


# --- GPU only --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["fsdp1", "deepspeed_zero2", "deepspeed_zero3", "fsdp", "ddp"])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_strategy_follows_the_one_device_run_and_exports(strategy, tmp_path, arithmetic_files):
    """train.py on every GPU of the machine vs. on one GPU; each step sees the whole training set (40 rows), so the
    data order is irrelevant and the loss curves must agree (fp32)."""
    if strategy.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    devices = torch.cuda.device_count()
    train_file, val_file = arithmetic_files

    def run(name: str, extra: list[str]) -> dict:
        command = [
            sys.executable,
            str(REPO / "train.py"),
            "model=tiny",
            "trainer=gpu",
            "trainer.precision=32-true",
            "trainer.max_steps=4",
            "trainer.max_epochs=4",
            "callbacks=none",
            "data=sft",
            f"data.train_files={train_file}",
            f"data.val_files={val_file}",
            f"hydra.run.dir={tmp_path / name}",
            *extra,
        ]
        subprocess.run(command, check=True, cwd=REPO, timeout=600)
        return json.loads((tmp_path / name / "summary.json").read_text())

    one = run("one", ["trainer.devices=1", "data.batch_size=40"])
    many = run("many", [f"strategy={strategy}", f"trainer.devices={devices}", f"data.batch_size={40 // devices}"])
    assert many["optimizer_steps"] == one["optimizer_steps"] == 4
    assert many["val_loss_after"] == pytest.approx(one["val_loss_after"], rel=1e-3)
    assert (tmp_path / "many" / "model" / "model.safetensors").is_file()
