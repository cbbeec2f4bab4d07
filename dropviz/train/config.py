"""What a training run is: :class:`RunConfig`, checked in full before anything is launched."""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from dropviz.data.datasets import DATASETS, image_folder_classes, image_folder_files, load_split
from dropviz.models import DROPCLUSTER_DEFAULT, MODELS, PLACEMENT, feature_layer_names
from dropviz.regularizers import REGISTRY

DEVICES = ("auto", "cpu", "cuda")
CIFAR_TRAINING_IMAGES = 50_000  # torchvision's training split, of CIFAR-10 and of CIFAR-100
SCHEDULES = ("linear", "constant")


class ConfigError(ValueError):
    """Invalid run parameters; the message lists every problem, in the words of the CLI flags (or of a form's
    labels, given to :meth:`RunConfig.validate`)."""


def regularizer_names() -> list[str]:
    """Registry methods that have a place in the models, plus ``none``."""
    return ["none"] + [name for name in REGISTRY if name in PLACEMENT]


@dataclass
class RunConfig:
    model: str = "resnet20"
    dataset: str = "cifar10"
    data_dir: str | None = None
    regularizer: str = "none"
    params: dict[str, Any] = field(default_factory=dict)  # regularizer parameters; REGISTRY has the rest
    dropcluster_after: str = DROPCLUSTER_DEFAULT  # the feature layer DropCluster sits after: stem, stage1, ...
    schedule: str = "linear"  # drop_prob ramps from 0 over the run (DropBlock's scheduled variant)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"
    limit_train: int | None = None
    limit_test: int | None = None
    log_every: int = 10
    compile: bool = False  # torch.compile the training step: for GPUs, where eager steps wait on the host

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown run setting(s): {', '.join(unknown)}")
        return cls(**values)

    def validate(self, labels: Mapping[str, str] | None = None) -> "RunConfig":
        """Raise :class:`ConfigError` naming every invalid setting; return ``self`` when all are valid.

        Settings are named by their CLI flags (``--batch-size``), or by ``labels`` (setting name -> a form's label,
        e.g. ``"Batch size"``) for a page, whose users never see the flags."""
        problems = []

        def term(name: str) -> str:
            return f"--{flag(name)}" if labels is None else labels.get(name, name)

        def choice(name: str, options) -> None:
            if getattr(self, name) not in options:
                problems.append(f"{term(name)} must be one of {', '.join(options)}; got {getattr(self, name)!r}")

        def at_least(name: str, low: float, kind: type = int, optional: bool = False) -> None:
            value = getattr(self, name)
            if not (value is None and optional) and not (_is_kind(value, kind) and value >= low):
                problems.append(f"{term(name)} must be {KIND_NAMES[kind]} >= {low}; got {value!r}")

        choice("model", list(MODELS))
        choice("dataset", list(DATASETS))
        choice("regularizer", regularizer_names())
        choice("schedule", SCHEDULES)
        choice("device", DEVICES)
        if not isinstance(self.compile, bool):
            problems.append(f"{term('compile')} must be true or false; got {self.compile!r}")
        for name in ("epochs", "batch_size", "log_every"):
            at_least(name, 1)
        for name in ("limit_train", "limit_test"):
            at_least(name, 1, optional=True)
        at_least("seed", 0)
        at_least("weight_decay", 0.0, float)
        if not (_is_kind(self.lr, float) and 0 < self.lr <= 10):
            problems.append(f"{term('lr')} must be a number in (0, 10]; got {self.lr!r}")
        if self.dataset == "imagefolder":
            problems += self._image_folder_problems(term, in_form=labels is not None)
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                problems.append(f"{term('device')} cuda was asked for but CUDA is not available here; use auto or cpu")
        problems += self._regularizer_problems(term) + self._placement_problems(term)
        if not problems:  # a batch needs the dataset's folder or name to be right first
            problems += self._batch_size_problems(term)
        if problems:
            raise ConfigError("; ".join(problems))
        return self

    def _batch_size_problems(self, term: Callable[[str], str]) -> list[str]:
        """A batch larger than the training set makes no step: refused now, not after the run is registered.
        (Under torchrun each process has a share of the images; the engine checks that.)"""
        if self.limit_train is not None and self.limit_train < self.batch_size:
            return [f"{term('batch_size')} {self.batch_size} is larger than the {self.limit_train} training images "
                    f"({term('limit_train')} {self.limit_train})"]
        available = training_images(self.dataset, self.data_dir)
        if available is not None and available < self.batch_size:
            return [f"{term('batch_size')} {self.batch_size} is larger than the {available} training images of "
                    f"{self.dataset}"]
        return []

    def _image_folder_problems(self, term: Callable[[str], str], in_form: bool) -> list[str]:
        folders = {split: Path(self.data_dir or "") / split for split in ("train", "test")}
        if not (self.data_dir and all(folder.is_dir() for folder in folders.values())):
            if in_form:  # the form's folder box starts at the data dir: the flags' story does not apply
                return [f"{term('data_dir')}: choose a folder with train/ and test/ class folders for the "
                        f"imagefolder dataset (got {self.data_dir or 'none'})"]
            return [f"--dataset imagefolder needs --data-dir, a folder with train/ and test/; $DROPVIZ_DATA_DIR, "
                    f"which holds all datasets, is not taken for it (got {self.data_dir or 'none'})"]
        classes = {split: image_folder_classes(folder) for split, folder in folders.items()}
        mismatch = class_folder_mismatch(self.data_dir, classes["train"], classes["test"], term("data_dir"))
        return [mismatch] if mismatch else []

    def _regularizer_problems(self, term: Callable[[str], str]) -> list[str]:
        if not isinstance(self.params, dict):
            return [f"regularizer parameters must be a mapping, got {self.params!r}"]
        if self.regularizer == "none":
            return [f"{term(n)} needs a {term('regularizer')}" for n in self.params]
        if self.regularizer not in REGISTRY:
            return []
        spec = REGISTRY[self.regularizer]
        accepted = {p.name: p for p in spec.params}
        problems = []
        for name, value in self.params.items():
            param = accepted.get(name)
            if param is None:
                problems.append(f"{term(name)} does not apply to {self.regularizer} (it takes "
                                f"{', '.join(term(a) for a in accepted) or 'no parameters'})")
            elif not _is_kind(value, param.kind):
                problems.append(f"{term(name)} must be {KIND_NAMES[param.kind]}; got {value!r}")
            elif param.kind in (int, float) and ((param.min is not None and value < param.min) or
                                                 (param.max is not None and value > param.max)):
                problems.append(f"{term(name)} must be in [{param.min}, {param.max}] for {self.regularizer}; "
                                f"got {value!r}")
        if not problems:
            try:  # the constructor's own checks (e.g. combinations of parameters)
                spec.make(**self.params)
            except (ValueError, TypeError) as error:
                problems.append(f"{self.regularizer}: {error}")
        return problems

    def _placement_problems(self, term: Callable[[str], str]) -> list[str]:
        if self.dropcluster_after == DROPCLUSTER_DEFAULT:
            return []
        if self.regularizer != "dropcluster":
            return [f"{term('dropcluster_after')} applies only to {term('regularizer')} dropcluster; got "
                    f"{self.dropcluster_after!r} "
                    f"with {self.regularizer}"]
        if self.model not in MODELS:
            return []
        places = feature_layer_names(self.model)
        if self.dropcluster_after not in places:
            return [f"{term('dropcluster_after')} must be one of {', '.join(places)} for {self.model}; "
                    f"got {self.dropcluster_after!r}"]
        return []


@functools.lru_cache(maxsize=None)
def _bundled_training_images(dataset: str) -> int:
    return len(load_split(dataset, "train"))


def training_images(dataset: str, data_dir: str | None) -> int:
    """How many images the training split of ``dataset`` has: counted, for an image folder (its files change);
    loaded once, for the small bundled digits."""
    if dataset in ("cifar10", "cifar100"):
        return CIFAR_TRAINING_IMAGES
    if dataset == "imagefolder":
        return len(image_folder_files(Path(data_dir) / "train")[1])
    return _bundled_training_images(dataset)


CIFAR10_JPEG = "cifar10-jpeg"  # the shared CIFAR-10 JPEG copy's folder in the data dir
DEFAULT_DATASETS = ("imagefolder", "cifar10", "digits")  # a form's default: the first present here


def image_folder_copy(root: str | Path) -> Path | None:
    """``<root>/cifar10-jpeg`` if it has train/ and test/ folders, else None."""
    folder = Path(root) / CIFAR10_JPEG
    return folder if all((folder / split).is_dir() for split in ("train", "test")) else None


def datasets_present(root: str | Path) -> list[str]:
    """The datasets a run can load from ``root`` without a network: the CIFAR-10 JPEG copy (as ``imagefolder``),
    torchvision's CIFAR files (its archive or its extracted batches) and digits, which ships with scikit-learn."""
    from torchvision.datasets import CIFAR10, CIFAR100  # imported here: only a form asks

    root = Path(root)
    present = ["imagefolder"] if image_folder_copy(root) else []
    for name, cls in (("cifar10", CIFAR10), ("cifar100", CIFAR100)):
        batches = [root / cls.base_folder / file for file, _ in cls.train_list + cls.test_list]
        if (root / cls.filename).is_file() or all(batch.is_file() for batch in batches):
            present.append(name)
    return present + ["digits"]


def class_folder_mismatch(data_dir: str | Path | None, train_classes: list[str], test_classes: list[str],
                          setting: str = "--data-dir") -> str | None:
    """What is wrong when test/ has other class folders than train/, else None. Labels are positions in the sorted
    class list, so a test/ without one of train/'s classes would shift every later label (a wrong accuracy,
    silently), and one with more would hold labels the model has no output for."""
    missing = sorted(set(train_classes) - set(test_classes))
    extra = sorted(set(test_classes) - set(train_classes))
    if not missing and not extra:
        return None
    differences = ([f"test/ lacks {', '.join(missing)}"] if missing else []) + \
                  ([f"test/ has {', '.join(extra)}, which train/ lacks"] if extra else [])
    return f"{setting} {data_dir}: test/ must have the class folders of train/; {'; '.join(differences)}"


KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _is_kind(value: Any, kind: type) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def flag(name: str) -> str:
    return name.replace("_", "-")
