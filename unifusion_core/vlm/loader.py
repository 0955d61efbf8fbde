"""Load a local Hugging Face VLM folder (safetensors only) as a frozen ``VLMEncoder``."""
from __future__ import annotations

import importlib.util
import inspect
import json
import logging
from pathlib import Path

import torch

from ..errors import UniFusionError
from .encoder import VLMEncoder
from .families import TEXT_ONLY, detect_family

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
           "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
           "float32": torch.float32, "float": torch.float32}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_vlm(path, *, dtype=None, device="cpu", attn_implementation=None,
             trust_remote_code: bool = False) -> VLMEncoder:
    """Load the model folder at ``path`` in eval mode with gradients off.

    dtype: None/"auto" (the config's dtype on GPU, fp32 on CPU), "bf16"/"fp16"/"fp32" or a
    torch.dtype. Image-text-to-text families load through AutoProcessor +
    AutoModelForImageTextToText, the text-only ``llm`` family through AutoTokenizer +
    AutoModelForCausalLM.
    """
    path = Path(path).expanduser()
    raw = _read_config(path)
    family = detect_family(raw, path, trust_remote_code)
    _check_weights(path)
    _check_tokenizer(path)
    import transformers

    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    torch_dtype = resolve_dtype(dtype, device, config)
    auto = (transformers.AutoModelForCausalLM if family in TEXT_ONLY
            else transformers.AutoModelForImageTextToText)
    kwargs = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if torch.device(device).type != "cpu":
        kwargs["device_map"] = {"": str(device)}  # load straight onto the device
    try:
        model = auto.from_pretrained(path, **kwargs).to(device).eval().requires_grad_(False)
    except (ImportError, ValueError) as err:
        if attn_implementation is None or "attention" not in str(err).lower():
            raise
        first = str(err).strip().split("\n")[0].split(". Please")[0].split(" https://")[0].rstrip(" .:")
        raise UniFusionError(f"The attention implementation {attn_implementation!r} cannot be used for {path} here "
                             f"({first}); choose 'sdpa' or 'auto'.") from None
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if not getattr(tokenizer, "is_fast", False):
        raise UniFusionError(f"Expected a fast tokenizer (tokenizer.json) in {path}, found only a "
                             f"slow {type(tokenizer).__name__}; token roles need character offsets.")
    processor = None
    if family not in TEXT_ONLY:
        processor = load_processor(path, raw.get("model_type"), trust_remote_code)
    if (processor or tokenizer).chat_template is None:
        raise UniFusionError(f"{path} has no chat template (expected chat_template.jinja/json or one "
                             f"in tokenizer_config.json).")
    log.info("loaded %s VLM %s (%s, %s) from %s", family, type(model).__name__, torch_dtype,
             device, path)
    return VLMEncoder(model, tokenizer, processor, family, config)


def resolve_dtype(dtype, device, config) -> torch.dtype:
    """A torch dtype from None/"auto", a name ("bf16", "fp16", "fp32", ...) or a torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if torch.device(device).type == "cpu":
            return torch.float32
        found = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        if found is None:
            return torch.float32
        if isinstance(found, torch.dtype):
            return found
        return _DTYPES.get(str(found).removeprefix("torch."), torch.float32)
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise UniFusionError(f"dtype should be None, 'auto', 'bf16', 'fp16', 'fp32' or a torch.dtype, "
                         f"found {dtype!r}.")


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise UniFusionError(f"Expected a Hugging Face model folder at {path}, found no such folder.")
    file = path / "config.json"
    if not file.is_file():
        raise UniFusionError(f"Expected a config.json in the model folder {path}, found none.")
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise UniFusionError(f"Expected valid JSON in {file}, found an unreadable file ({err}).") from err


def _check_weights(path: Path) -> None:
    """Only safetensors are loaded (pickled checkpoints can run code when unpickled), and each must
    be readable: a truncated download gets its file named instead of a bare SafetensorError."""
    files = sorted(path.glob("*.safetensors"))
    if files:
        from safetensors import SafetensorError, safe_open

        for file in files:
            try:
                with safe_open(str(file), framework="pt") as f:
                    keys = list(f.keys())
                    if keys:
                        f.get_slice(keys[-1])  # the header's offsets are checked against the file size
            except (SafetensorError, OSError, ValueError) as err:
                raise UniFusionError(f"{file} is not a readable safetensors file ({str(err).strip().splitlines()[0]});"
                                     f" the download is incomplete or damaged: download it again.") from None
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise UniFusionError(f"Expected .safetensors weights in {path}, found only pickle weights "
                             f"({', '.join(pickles[:3])}); convert them to safetensors first.")
    raise UniFusionError(f"Expected .safetensors weights in {path}, found none.")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def _check_tokenizer(path: Path) -> None:
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UniFusionError(f"Expected tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}, ...) in {path}, found none; "
                             f"copy them (and the processor files) from the model's repository into the folder.")


# --------------------------------------------------------------------------------------------------
# processor
# --------------------------------------------------------------------------------------------------

def load_processor(path: Path, model_type: str | None, trust_remote_code: bool):
    """AutoProcessor, or, where only the video processor cannot load because torchvision is missing,
    the same processor class built without its video processor (images work the same)."""
    import transformers

    try:
        return transformers.AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ImportError, ValueError) as err:  # transformers raises either for a missing backend
        if "torchvision" not in str(err).lower() or importlib.util.find_spec("torchvision"):
            raise UniFusionError(f"Could not load the processor of {path}: "
                                 f"{str(err).strip().splitlines()[0]}") from err
    log.warning("torchvision is not installed: loading the processor of %s without its video "
                "processor (images are unaffected).", path)
    return _image_only_processor(path, model_type)


_IMAGE_ONLY: dict = {}


def _image_only_processor(path: Path, model_type: str | None):
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    if name is None or not hasattr(transformers, name):
        raise UniFusionError(f"Expected a processor class for model_type '{model_type}' of {path}, "
                             f"found none in transformers {transformers.__version__}.")
    cls = _without_video_check(getattr(transformers, name))
    params = inspect.signature(cls.__init__).parameters
    extra = {k: v for k, v in _json(path / "processor_config.json").items()
             if k in params and k not in ("image_processor", "tokenizer", "video_processor")}
    extra["chat_template"] = extra.get("chat_template") or _chat_template(path)
    if "video_processor" in params:
        extra["video_processor"] = None
    return cls(image_processor=transformers.AutoImageProcessor.from_pretrained(path),
               tokenizer=transformers.AutoTokenizer.from_pretrained(path), **extra)


def _without_video_check(cls):
    """``cls`` accepting ``video_processor=None`` (transformers type-checks every sub-processor)."""
    if cls not in _IMAGE_ONLY:
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and argument_name == "video_processor":
                return None
            return cls.check_argument_for_proper_class(self, argument_name, argument)

        _IMAGE_ONLY[cls] = type(cls.__name__, (cls,), {
            "check_argument_for_proper_class": check_argument_for_proper_class})
    return _IMAGE_ONLY[cls]


def _chat_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    return _json(path / "chat_template.json").get("chat_template")


def _json(file: Path) -> dict:
    return json.loads(file.read_text()) if file.is_file() else {}
