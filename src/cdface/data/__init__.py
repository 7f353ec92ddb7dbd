"""cdface.data: RecordIO and .bin formats, datasets, decoding, transforms, alignment, synthetic faces."""

from cdface.data.align import ARCFACE_TEMPLATE, align_face, crop_template, estimate_similarity, warp_affine
from cdface.data.bad_samples import BadSampleTracker, EpochBadReport
from cdface.data.datasets import (
    FaceDataset,
    ImageFolderDataset,
    ImageListDataset,
    InMemoryDataset,
    RecordIODataset,
    build_train_dataset,
)
from cdface.data.decode import decode_image, encode_jpeg
from cdface.data.lfw_pairs import make_bin_from_folder
from cdface.data.pairs_bin import PairSet, decode_pairs, load_bin, write_bin
from cdface.data.recordio import RecordIOReader
from cdface.data.recordio_format import IRHeader, pack_header, unpack_header
from cdface.data.recordio_writer import RecordIOWriter
from cdface.data.transforms import EvalTransform, TrainTransform, sample_rng, to_tensor

__all__ = [
    "ARCFACE_TEMPLATE",
    "BadSampleTracker",
    "EpochBadReport",
    "EvalTransform",
    "FaceDataset",
    "IRHeader",
    "ImageFolderDataset",
    "ImageListDataset",
    "InMemoryDataset",
    "PairSet",
    "RecordIODataset",
    "RecordIOReader",
    "RecordIOWriter",
    "TrainTransform",
    "align_face",
    "build_train_dataset",
    "crop_template",
    "decode_image",
    "decode_pairs",
    "encode_jpeg",
    "estimate_similarity",
    "load_bin",
    "make_bin_from_folder",
    "pack_header",
    "sample_rng",
    "to_tensor",
    "unpack_header",
    "warp_affine",
    "write_bin",
]
