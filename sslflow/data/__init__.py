"""Image sources, the WebDataset shard writer and the shard reader."""

from sslflow.data.datasets import fashion_mnist_dir
from sslflow.data.decoding import decode_batch, decode_image, decode_tensor
from sslflow.data.geometry import ImageGeometry
from sslflow.data.manifest import Manifest, ShardInfo, resolve_urls
from sslflow.data.reader import Mode, ShardDataset, ShardReadError, geometry_of
from sslflow.data.samples import EncodedImage, Sample, Skipped, Source, SourceError
from sslflow.data.sources import SOURCE_NAMES, open_source
from sslflow.data.writer import ShardWriteError, WriterConfig, write_shards

__all__ = [
    "SOURCE_NAMES",
    "EncodedImage",
    "ImageGeometry",
    "Manifest",
    "Mode",
    "Sample",
    "ShardDataset",
    "ShardInfo",
    "ShardReadError",
    "ShardWriteError",
    "Skipped",
    "Source",
    "SourceError",
    "WriterConfig",
    "decode_batch",
    "decode_image",
    "decode_tensor",
    "fashion_mnist_dir",
    "geometry_of",
    "open_source",
    "resolve_urls",
    "write_shards",
]
