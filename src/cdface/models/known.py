"""Released face-recognition checkpoints that cdface recognises, with their model cards.

A file is matched by what it holds: the release layout (`cdface.models.released`), the architecture and
embedding size its keys and shapes give, the class count of the classifier it ships (which tells training
sets apart), and its sha256 where the release publishes one (none of the releases below publishes a digest
today; a matching digest would name the exact file). A match applies the card's input contract without
flags; an explicit model card (`<stem>.json` / `model.json`) or command-line flags still win.

Sources: each entry's `source` is the README whose table it copies (architecture, training set, published
accuracy). Licence notes are the code licence of the releasing repository; the weights are trained on
datasets (MS1M, WebFace, CASIA-WebFace, VGGFace2) whose own terms limit use, typically to non-commercial
research.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cdface.models.adaface_ir import ADAFACE_INPUT_CFG
from cdface.models.inception_resnet_v1 import FACENET_INPUT_CFG
from cdface.models.magface_iresnet import MAGFACE_INPUT_CFG
from cdface.models.released import CVLFACE_INPUT_CFG

__all__ = ["KnownModel", "KNOWN_MODELS", "identify_known", "DATASET_CLASSES"]

# identities in the training sets as the releases' classifiers count them (insightface's packs for MS1M* and
# CASIA-WebFace; WebFace4M/12M as released; VGGFace2's train split; facenet-pytorch's CASIA logits)
DATASET_CLASSES = {
    "MS1MV2": 85742, "MS1MV3": 93431, "WebFace4M": 205990, "WebFace12M": 617970, "CASIA-WebFace": 10572,
    "VGGFace2": 8631,
}

_ADAFACE_SRC = "https://github.com/mk-minchul/AdaFace#pretrained-models (Validation table: HQ sets)"
_CVLFACE_SRC = "https://github.com/mk-minchul/CVLface/blob/main/cvlface/pretrained_models/README.md"
_MAGFACE_SRC = "https://github.com/IrvingMeng/MagFace#model-zoo"
_FACENET_SRC = "https://github.com/timesler/facenet-pytorch#pretrained-models"
_TRANSFACE_SRC = "https://github.com/DanJun6737/TransFace#transface-pretrained-models"
_RESEARCH = "the training set's terms apply to the weights (non-commercial research)"


@dataclass(frozen=True)
class KnownModel:
    """One released checkpoint: what it is, how to feed it, what its authors report.

    layout: the release container (`cdface.models.released`: "adaface", "magface", "facenet-pytorch",
    "cvlface", "transface"). head_classes: the classifier's class count in the file (None: the release keeps no head).
    accuracy: the published numbers, verbatim from `source`. sha256: the published digest, or None.
    """

    name: str
    arch: str
    layout: str
    training_set: str
    input_cfg: dict[str, Any]
    licence: str
    accuracy: str
    source: str
    embedding_size: int = 512
    head_classes: int | None = None
    sha256: str | None = None

    def contract_text(self) -> str:
        """e.g. "112x112 BGR, (x - 127.5) / 127.5" (x: 0..255 pixels)."""
        cfg = self.input_cfg

        def one(values: Any) -> str:
            texts = [f"{255 * v:.4g}" for v in values]
            return texts[0] if len(set(texts)) == 1 else "(" + ",".join(texts) + ")"

        return (f"{cfg['input_size'][0]}x{cfg['input_size'][1]} {cfg['color']}, "
                f"(x - {one(cfg['mean'])}) / {one(cfg['std'])}")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "layout": self.layout, "training_set": self.training_set,
                "embedding_size": self.embedding_size, "input_size": list(self.input_cfg["input_size"]),
                "mean": list(self.input_cfg["mean"]), "std": list(self.input_cfg["std"]),
                "color": self.input_cfg["color"], "licence": self.licence, "accuracy": self.accuracy,
                "source": self.source, "head_classes": self.head_classes, "sha256": self.sha256}


def _adaface(arch: str, dataset: str, lfw: str, cfp: str, agedb: str) -> KnownModel:
    return KnownModel(
        f"adaface_{arch.removeprefix('adaface_')}_{dataset.lower().replace('-', '_')}", arch, "adaface", dataset,
        ADAFACE_INPUT_CFG, f"MIT (AdaFace code); {_RESEARCH}", f"LFW {lfw}, CFP-FP {cfp}, AgeDB {agedb}",
        _ADAFACE_SRC, head_classes=DATASET_CLASSES[dataset],
    )


def _transface(arch: str, dataset: str, far1e5: str, far1e4: str) -> KnownModel:
    return KnownModel(
        f"{arch}_{dataset.lower()}", arch, "transface", dataset, CVLFACE_INPUT_CFG,
        f"no licence file in the TransFace repository; {_RESEARCH}",
        f"IJB-C TAR {far1e5} @ FAR 1e-5, {far1e4} @ FAR 1e-4", _TRANSFACE_SRC,
    )


def _cvlface(loss: str, arch: str, dataset: str, lfw: str, cfp: str, agedb: str) -> KnownModel:
    return KnownModel(
        f"cvlface_{loss}_{arch.removeprefix('adaface_')}_{dataset.lower().replace('-', '_')}", arch, "cvlface",
        dataset, CVLFACE_INPUT_CFG, f"MIT (CVLface code); {_RESEARCH}", f"LFW {lfw}, CFP-FP {cfp}, AgeDB {agedb}",
        _CVLFACE_SRC,
    )


KNOWN_MODELS: tuple[KnownModel, ...] = (
    # AdaFace README, "Pretrained Models" and "Validation" (accuracy in %, from its 0..1 table)
    _adaface("adaface_ir18", "CASIA-WebFace", "99.13", "92.59", "92.72"),
    _adaface("adaface_ir18", "VGGFace2", "99.47", "97.13", "94.07"),
    _adaface("adaface_ir18", "WebFace4M", "99.53", "97.26", "96.47"),
    _adaface("adaface_ir50", "CASIA-WebFace", "99.42", "96.41", "94.38"),
    _adaface("adaface_ir50", "WebFace4M", "99.78", "98.97", "97.78"),
    _adaface("adaface_ir50", "MS1MV2", "99.82", "97.86", "97.85"),
    _adaface("adaface_ir101", "MS1MV2", "99.82", "98.49", "98.05"),
    _adaface("adaface_ir101", "MS1MV3", "99.78", "98.91", "98.17"),
    _adaface("adaface_ir101", "WebFace4M", "99.80", "99.17", "97.90"),
    _adaface("adaface_ir101", "WebFace12M", "99.82", "99.26", "98.00"),
    # CVLface "Face Recognition Performance Board" (IR releases on the Hugging Face hub, model.safetensors)
    _cvlface("adaface", "adaface_ir101", "WebFace12M", "99.82", "99.24", "98.00"),
    _cvlface("adaface", "adaface_ir101", "WebFace4M", "99.83", "99.27", "97.90"),
    _cvlface("arcface", "adaface_ir101", "WebFace4M", "99.78", "99.21", "97.95"),
    _cvlface("adaface", "adaface_ir101", "MS1MV3", "99.83", "99.09", "98.18"),
    _cvlface("adaface", "adaface_ir101", "MS1MV2", "99.80", "98.61", "98.05"),
    _cvlface("adaface", "adaface_ir50", "MS1MV2", "99.85", "98.09", "97.85"),
    _cvlface("adaface", "adaface_ir50", "WebFace4M", "99.78", "98.99", "97.78"),
    _cvlface("adaface", "adaface_ir50", "CASIA-WebFace", "99.37", "97.04", "94.40"),
    _cvlface("adaface", "adaface_ir18", "WebFace4M", "99.58", "97.80", "96.48"),
    _cvlface("adaface", "adaface_ir18", "VGGFace2", "99.53", "97.64", "94.07"),
    _cvlface("adaface", "adaface_ir18", "CASIA-WebFace", "99.22", "94.93", "92.68"),
    # TransFace README "TransFace Pretrained Models" (model.pt: a plain state_dict, no classifier)
    _transface("transface_s", "MS1MV2", "93.87", "96.45"),
    _transface("transface_b", "MS1MV2", "94.15", "96.55"),
    _transface("transface_l", "MS1MV2", "94.55", "96.59"),
    _transface("transface_s", "Glint360K", "96.06", "97.33"),
    _transface("transface_b", "Glint360K", "96.18", "97.45"),
    _transface("transface_l", "Glint360K", "96.29", "97.61"),
    # MagFace README "Model Zoo" (its README publishes no accuracy table)
    KnownModel("magface_iresnet100_ms1mv2", "magface_iresnet100", "magface", "MS1MV2", MAGFACE_INPUT_CFG,
               "Apache-2.0 (MagFace code); " + _RESEARCH, "not published in the README", _MAGFACE_SRC,
               head_classes=DATASET_CLASSES["MS1MV2"]),
    KnownModel("magface_iresnet50_ms1mv2", "magface_iresnet50", "magface", "MS1MV2", MAGFACE_INPUT_CFG,
               "Apache-2.0 (MagFace code); " + _RESEARCH, "not published in the README", _MAGFACE_SRC,
               head_classes=DATASET_CLASSES["MS1MV2"]),
    KnownModel("magface_iresnet18_casia_webface", "magface_iresnet18", "magface", "CASIA-WebFace",
               MAGFACE_INPUT_CFG, "Apache-2.0 (MagFace code); " + _RESEARCH, "not published in the README",
               _MAGFACE_SRC, head_classes=DATASET_CLASSES["CASIA-WebFace"]),
    # facenet-pytorch README "Pretrained models" (LFW accuracy as listed by davidsandberg/facenet)
    KnownModel("facenet_20180402_114759_vggface2", "inception_resnet_v1", "facenet-pytorch", "VGGFace2",
               FACENET_INPUT_CFG, "MIT (facenet-pytorch code); " + _RESEARCH, "LFW 99.65", _FACENET_SRC,
               head_classes=8631),
    KnownModel("facenet_20180408_102900_casia_webface", "inception_resnet_v1", "facenet-pytorch",
               "CASIA-WebFace", FACENET_INPUT_CFG, "MIT (facenet-pytorch code); " + _RESEARCH, "LFW 99.05",
               _FACENET_SRC, head_classes=10575),
)


def identify_known(
    layout: str | None,
    arch: str,
    embedding_size: int,
    head_classes: int | None,
    sha256: Callable[[], str] | None = None,
    table: tuple[KnownModel, ...] = KNOWN_MODELS,
) -> list[KnownModel]:
    """The known releases a file can be: a published sha256 that matches names the one file; otherwise every
    entry of the same layout, architecture and embedding size, narrowed by the classifier's class count when
    the file has one. `sha256` is called (the file hashed) only when some candidate publishes a digest.
    All candidates share an input contract (it belongs to the layout), so the caller applies it even when the
    training set stays ambiguous."""
    candidates = [m for m in table if m.layout == layout and m.arch == arch and m.embedding_size == embedding_size]
    with_digest = [m for m in candidates if m.sha256]
    if with_digest and sha256 is not None:
        digest = sha256()
        exact = [m for m in with_digest if m.sha256 == digest]
        if exact:
            return exact
    if head_classes is not None:
        narrowed = [m for m in candidates if m.head_classes == head_classes]
        return narrowed or candidates
    return candidates
