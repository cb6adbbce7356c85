"""Hugging Face GPT-2 weights -> an lmplay checkpoint that `lmplay.generate` samples and `lmplay.train` fine-tunes.

    python -m experiments.gpt2.import_hf SRC OUT.lmp [--num-heads N] [--tokenizer gpt2|bytes]

SRC is a safetensors file (e.g. gpt2's model.safetensors), a torch state-dict file (pytorch_model.bin),
a directory holding one of them (and config.json), or a Hugging Face model id (gpt2, gpt2-medium, ...),
downloaded with huggingface_hub. The names may carry the `transformer.` prefix of GPT2LMHeadModel or
not (GPT2Model, OpenAI's own upload). Hugging Face's GPT-2 stores its linear layers as Conv1D, whose
weight is [in, out]: they are transposed into nn.Linear's [out, in].
"""

import argparse
import json
import pickle
import re
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from experiments.gpt2 import versions
from experiments.gpt2.model import GPT2, LN_EPS
from lmplay.cli import run_main
from lmplay.data.sources import HUB_ID
from lmplay.data.tokenizers import TOKENIZERS, get_tokenizer
from lmplay.errors import ConfigError
from lmplay.runner import checkpoint
from lmplay.runner.registry import registered

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
BLOCK_NAMES = {"ln_1": "ln1", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj", "ln_2": "ln2",
               "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj"}
TOP_NAMES = {"wte.weight": "embed.tok.weight", "wpe.weight": "embed.pos.weight", "ln_f.weight": "ln_f.weight",
             "ln_f.bias": "ln_f.bias"}
BUFFERS = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)$")  # old causal-mask buffers, not weights
BLOCK_KEY = re.compile(r"h\.(\d+)\.(.+)\.(weight|bias)$")


def locate(src: str) -> tuple[Path, Path | None]:
    """The weights file and its config.json (None when there is none) for a file, directory or hub id."""
    path = Path(src)
    if path.is_file():
        config = path.with_name("config.json")
        return path, config if config.is_file() else None
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name, path / "config.json" if (path / "config.json").is_file() else None
        raise ConfigError(f"{path} holds none of {', '.join(WEIGHT_FILES)}")
    return download(src)


def download(repo_id: str) -> tuple[Path, Path]:
    """model.safetensors and config.json of a hub model (cached by huggingface_hub; needs the network once)."""
    if not HUB_ID.fullmatch(repo_id) or repo_id.endswith((".safetensors", ".bin", ".pt", ".pth")):
        raise ConfigError(f"{repo_id} does not exist (give a weights file, a directory or a hub id such as gpt2)")
    from huggingface_hub import hf_hub_download

    from lmplay.data.sources import hub_reachable

    offline = not hub_reachable()  # else huggingface_hub retries for half a minute before it gives up
    try:
        weights = Path(hf_hub_download(repo_id, "model.safetensors", local_files_only=offline))
        return weights, Path(hf_hub_download(repo_id, "config.json", local_files_only=offline))
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, no such file: each ends the import the same way
        why = "the hub is unreachable, and the local HF cache has no copy" if offline else \
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}"
        raise ConfigError(f"cannot download {repo_id} from the Hugging Face hub ({why}); download model.safetensors "
                          f"and config.json yourself and pass the directory") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors or torch file, without unpickling arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message goes on to suggest weights_only=False: running the file's code
        raise ConfigError(f"cannot read {path} as a state dict: it is not a file of plain tensors (a .safetensors file, "
                          f"or a weights-only pytorch_model.bin), and lmplay never runs code from a file") from None
    except Exception as e:  # noqa: BLE001 - corrupt or foreign files raise many kinds of errors
        raise ConfigError(f"cannot read {path} as a state dict ({type(e).__name__}: {str(e).splitlines()[0]})") \
            from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def read_config(path: Path | None) -> dict:
    """config.json, after refusing GPT-2 variants this architecture does not compute."""
    if path is None:
        return {}
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        why = "nested too deep" if isinstance(e, RecursionError) else e
        raise ConfigError(f"{path} is not JSON ({why}); use the model's config.json, or leave it out") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} is not a JSON object of settings (it holds a {type(config).__name__})")
    for key in ("layer_norm_epsilon", "n_embd", "n_layer", "n_head", "n_positions", "vocab_size"):
        if key in config and (isinstance(config[key], bool) or not isinstance(config[key], (int, float))):
            raise ConfigError(f"{path}: {key}={config[key]!r} should be a number, as in GPT-2's config.json")
    problems = []
    if config.get("model_type", "gpt2") != "gpt2":
        problems.append(f"model_type={config['model_type']!r} (only gpt2)")
    if config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={config['activation_function']!r} (GPT-2 uses gelu_new)")
    if abs(config.get("layer_norm_epsilon", LN_EPS) - LN_EPS) > 1e-12:
        problems.append(f"layer_norm_epsilon={config['layer_norm_epsilon']} (GPT-2 uses {LN_EPS})")
    for key, expected in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                          ("tie_word_embeddings", True)):
        if config.get(key, expected) != expected:
            problems.append(f"{key}={config[key]}")
    if config.get("n_inner") not in (None, 4 * config.get("n_embd", 0)):
        problems.append(f"n_inner={config['n_inner']} (GPT-2's MLP is 4 x n_embd)")
    if problems:
        raise ConfigError(f"{path} describes a GPT-2 variant lmplay's gpt2 does not compute: {'; '.join(problems)}")
    return config


def to_lmplay(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 names and layouts -> experiments.gpt2.model.GPT2's (fp32, Conv1D transposed)."""
    out, unknown = {}, []
    for key, tensor in hf.items():
        key = key.removeprefix("transformer.")
        tensor = tensor.float()
        if BUFFERS.fullmatch(key):
            continue
        if key in TOP_NAMES:
            out[TOP_NAMES[key]] = tensor
        elif key == "lm_head.weight":
            out[key] = tensor
        elif (m := BLOCK_KEY.fullmatch(key)) and m.group(2) in BLOCK_NAMES:
            index, layer, kind = m.groups()
            if layer in CONV1D and kind == "weight":
                tensor = tensor.t().contiguous()
            out[f"blocks.{index}.{BLOCK_NAMES[layer]}.{kind}"] = tensor
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"not a GPT-2 state dict: unexpected tensors {', '.join(unknown[:5])}"
                          f"{' ...' if len(unknown) > 5 else ''}")
    for name, hf_name in (("embed.tok.weight", "wte.weight"), ("embed.pos.weight", "wpe.weight")):
        if name not in out:
            raise ConfigError(f"not a GPT-2 state dict: no {hf_name}")
        if out[name].dim() != 2:
            raise ConfigError(f"not a GPT-2 state dict: {hf_name} has shape {list(out[name].shape)}, not [rows, width]")
    bad = next((hf_key for hf_key, tensor in hf.items() if not torch.isfinite(tensor).all()), None)
    if bad is not None:
        raise ConfigError(f"{bad} holds NaN or inf values: these weights are damaged; nothing was written")
    head = out.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, out["embed.tok.weight"]):
        raise ConfigError("the output layer (lm_head.weight) differs from the token embedding; GPT-2 ties them")
    return out


def shape_of(weights: dict[str, torch.Tensor], config: dict, num_heads: int | None) -> dict[str, int]:
    """Architecture from the tensors' shapes; the head count is not in them (config.json or --num-heads)."""
    vocab_size, embed_dim = weights["embed.tok.weight"].shape
    context_len = weights["embed.pos.weight"].shape[0]
    num_blocks = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
    heads = num_heads or config.get("n_head")
    given = f"--num-heads {num_heads}" if num_heads else f"config.json's n_head={heads}"
    if heads is None:
        heads = max(1, embed_dim // 64)
        given = f"the assumed {heads} heads"
        print(f"notice: no config.json and no --num-heads; assuming GPT-2's 64-wide heads: {heads} "
              f"head{'s' if heads > 1 else ''}", file=sys.stderr)
    if not isinstance(heads, int) or heads < 1 or embed_dim % heads:
        raise ConfigError(f"{given} does not divide the embedding width {embed_dim}; give --num-heads N")
    return {"vocab_size": vocab_size, "context_len": context_len, "num_blocks": num_blocks, "embed_dim": embed_dim,
            "num_heads": heads}


MAX_PADDING = 128  # a vocabulary padded for speed (50257 -> 50304) rounds up to at most this multiple


def pick_tokenizer(vocab_size: int, name: str | None) -> str:
    """The named tokenizer, or the one whose vocabulary has exactly the model's size."""
    if name is None:
        matches = [n for n in TOKENIZERS if get_tokenizer(n).vocab_size == vocab_size]
        if not matches:
            sizes = ", ".join(f"{n}: {get_tokenizer(n).vocab_size}" for n in TOKENIZERS)
            raise ConfigError(f"the model's vocabulary ({vocab_size}) matches no lmplay tokenizer ({sizes}); "
                              f"pass --tokenizer")
        return matches[0]
    size = get_tokenizer(name).vocab_size
    if size > vocab_size:
        raise ConfigError(f"tokenizer {name} has {size} tokens, more than the model's vocabulary ({vocab_size})")
    if vocab_size > -(-size // MAX_PADDING) * MAX_PADDING:  # not padding: the rows are another tokenizer's tokens
        matching = [n for n in TOKENIZERS if get_tokenizer(n).vocab_size == vocab_size]
        fix = ("leave --tokenizer out to take the matching one" if matching else
               "lmplay has no tokenizer of that size, so these weights cannot be used with one of its tokenizers")
        raise ConfigError(f"the model's vocabulary ({vocab_size}) is far larger than tokenizer {name}'s ({size}): its "
                          f"embedding rows are another tokenizer's; {fix}")
    return name


def version_name(shape: dict[str, int]) -> str:
    """This package's version with this shape; its first (the smallest) otherwise: the checkpoint's
    arguments carry the shape. Read off the registry, so a copy of the package names its own versions."""
    own = [r for r in registered().values() if r.factory.__module__ == versions.__name__]
    same = (r.name for r in own if all(r.factory().overrides[k] == v for k, v in shape.items()
                                       if k in ("num_blocks", "embed_dim", "num_heads")))
    return next(same, own[0].name)


def build_checkpoint(src: str, num_heads: int | None = None, tokenizer: str | None = None) -> dict:
    """An lmplay checkpoint (model component only: training starts its optimizer and data fresh)."""
    weights_path, config_path = locate(src)
    weights = to_lmplay(read_state_dict(weights_path))
    shape = shape_of(weights, read_config(config_path), num_heads)
    model = GPT2(**shape, tokenizer=pick_tokenizer(shape["vocab_size"], tokenizer))
    weights["lm_head.weight"] = weights["embed.tok.weight"]
    checkpoint.load_weights(model, weights, f"the weights in {weights_path}")
    exp = version_name(shape)
    config = OmegaConf.to_yaml({"exp": exp, "imported_from": str(src), "tokenizer": model.tokenizer_name,
                                "context_len": model.context_len,
                                "model": {"_target_": "experiments.gpt2.model.GPT2", **shape}})
    return {"exp": exp, "config": config, "rng": checkpoint.rng_state(),
            "components": {"model": checkpoint.model_part(model)}}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpt2.import_hf", description=__doc__.split("\n")[0])
    parser.add_argument("src", help="model.safetensors, pytorch_model.bin, a directory with one, or a hub id")
    parser.add_argument("out", type=Path, help="the .lmp checkpoint to write (e.g. outputs/gpt2/model.lmp)")
    parser.add_argument("--num-heads", type=int, help="attention heads, when there is no config.json")
    parser.add_argument("--tokenizer", choices=sorted(TOKENIZERS), help="default: the one matching the vocabulary")
    parser.add_argument("--replace", action="store_true",
                        help="write over an existing OUT (a fine-tuned run's, say), kept as OUT.bak, or a run's "
                        "model.lmp: the run is set aside in replaced_<time>/")
    args = parser.parse_args(argv)
    checkpoint.check_out(args.out, args.replace)
    ckpt = build_checkpoint(args.src, args.num_heads, args.tokenizer)
    aside = checkpoint.write_out(ckpt, args.out)
    args_ = ckpt["components"]["model"]["state_args"]
    print(f"wrote {args.out}: experiment {ckpt['exp']}, {args_['num_blocks']} blocks, {args_['embed_dim']} wide, "
          f"{args_['num_heads']} heads, context {args_['context_len']}, tokenizer {args_['tokenizer']}")
    if aside:
        print(f"the run it replaced (checkpoints, stats, TensorBoard files) is kept in {aside}")


if __name__ == "__main__":
    run_main(main)
