"""Image data sets as (N, C, H, W) float32 arrays of integer pixels on the 8-bit scale (0…255).

* ``digits``: scikit-learn's 1,797 8×8 digits (1 channel). Their 17 grey levels 0–16 become
  4-bit data: 16 is merged into 15 and the level v is stored as 16·v, so ``bits=4`` recovers
  v exactly (``bits=8`` models the stored values). A fixed shuffle (seed 0) splits them
  80/10/10 whatever the run's seed, so test scores compare across runs.
* MNIST: the four standard IDX files (gzipped or not) in a directory (``--data mnist --data-dir DIR``,
  or ``--data DIR``). Train = the first 55,000 official training images, validation = the last
  5,000, test = the official 10,000.
* A folder of PNG images (``--data DIR``), all the same size and colour mode (grey or RGB, 8 bits),
  or a .npy array of shape (N, C, H, W) of integer pixels 0–255 (``--data images.npy``, as
  ``flowforge sample`` writes them); shuffled with the run's seed and split 80/10/10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowforge.data.idx import read_idx
from flowforge.data.toy import TOY_DATASETS
from flowforge.errors import FlowforgeError

IMAGE_DATASETS = ("digits", "mnist")
MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}
MNIST_LABEL_FILES = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}
IMAGE_CLASSES = {"digits": 10, "mnist": 10}  # the labelled image sets (``--context label``: the digit)
MNIST_VALIDATION = 5_000  # the last training images
MIN_IMAGES = 10


def load_digits_images() -> np.ndarray:
    """scikit-learn's digits as 4-bit data on the 8-bit scale: (1797, 1, 8, 8), values 16·min(v, 15)."""
    return load_digits_labelled()[0]


def load_digits_labelled() -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_digits_images` and each image's digit (int64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    levels = np.minimum(digits.images, 15)
    return (16 * levels[:, None]).astype(np.float32), digits.target.astype(np.int64)


def _split_80_10_10(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(images))
    n_held = max(1, len(images) // 10)
    test, val, train = np.split(images[order], [n_held, 2 * n_held])
    return train, val, test


def _mnist_path(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise FlowforgeError(f"{directory}: no {stem}.gz (MNIST's IDX files are expected there)")


def is_idx_directory(path: str | Path) -> bool:
    """True for a directory holding MNIST-style training and test image IDX files."""
    path = Path(path)
    return all((path / s).is_file() or (path / f"{s}.gz").is_file() for s in MNIST_FILES.values())


def load_mnist_labels(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The official (training, test) labels of MNIST-style IDX files, as int64."""
    arrays = []
    for stem in MNIST_LABEL_FILES.values():
        path = _mnist_path(Path(directory), stem)
        labels = read_idx(path)
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise FlowforgeError(f"{path}: expected uint8 labels (N,), got {labels.dtype} of shape {labels.shape}")
        arrays.append(labels.astype(np.int64))
    return arrays[0], arrays[1]


def load_mnist(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The official (training, test) images, shapes (60000, 1, 28, 28) and (10000, 1, 28, 28) for MNIST."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FlowforgeError(f"{directory}: no such directory (give the folder holding MNIST's IDX files)")
    arrays = []
    for stem in MNIST_FILES.values():
        path = _mnist_path(directory, stem)
        images = read_idx(path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise FlowforgeError(f"{path}: expected uint8 images (N, H, W), got {images.dtype} of shape {images.shape}")
        arrays.append(images[:, None].astype(np.float32))
    train, test = arrays
    if train.shape[1:] != test.shape[1:]:
        raise FlowforgeError(f"{directory}: training and test images differ in size")
    return train, test


def _png_to_chw(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            array = np.asarray(image)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise FlowforgeError(f"{path}: not a readable PNG image ({err})") from None
    if mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "F"):
        raise FlowforgeError(f"{path}: unsupported colour mode {mode}; use grey or RGB")
    if mode == "1":
        array = array.astype(np.uint8) * 255
    if mode in ("LA", "RGBA"):
        if (array[..., -1] != 255).any():
            raise FlowforgeError(f"{path}: has transparent pixels; save it without an alpha channel")
        array = array[..., :-1]
    check_pixels(array, path)
    array = array.astype(np.float32)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def check_pixels(array: np.ndarray, source: str | Path) -> None:
    """Refuse pixels that are not integers 0–255 (the 8-bit scale every image flow here scores on),
    naming the first such value; an array of fractions in [0, 1] is told to scale by 255."""
    if array.dtype == np.uint8:
        return
    bad = (array < 0) | (array > 255) | (array != np.round(array))
    if bad.any():
        value = array[bad].flat[0]
        hint = ("; it looks scaled to [0, 1]: multiply by 255 and round" if array.min() >= 0 and array.max() <= 1
                else "")
        raise FlowforgeError(f"{source}: pixel value {value:g} is not an 8-bit pixel (integers 0–255){hint}")


def png_files(directory: str | Path) -> list[Path]:
    """The ``*.png`` files of ``directory``, sorted by name (as strings: 10.png before 2.png)."""
    return sorted(p for p in Path(directory).iterdir() if p.suffix.lower() == ".png" and p.is_file())


def image_files(directory: str | Path) -> list[Path]:
    """The files a folder's images (and labels) are read from: its IDX files, or its PNGs."""
    if not is_idx_directory(directory):
        return png_files(directory)
    stems = [*MNIST_FILES.values(), *MNIST_LABEL_FILES.values()]
    return [path for stem in stems for path in [_found(Path(directory), stem)] if path is not None]


def _found(directory: Path, stem: str) -> Path | None:
    try:
        return _mnist_path(directory, stem)
    except FlowforgeError:
        return None


def read_png_folder(directory: str | Path) -> np.ndarray:
    """Every ``*.png`` in ``directory`` (sorted by name) as (N, C, H, W); all must share size and mode."""
    directory = Path(directory)
    files = png_files(directory)
    if not files:
        raise FlowforgeError(f"{directory}: holds no .png images")
    images = [_png_to_chw(files[0])]
    for path in files[1:]:
        image = _png_to_chw(path)
        if image.shape != images[0].shape:
            raise FlowforgeError(f"{path}: shape {_describe(image.shape)} differs from {files[0].name}'s "
                                 f"{_describe(images[0].shape)}; all images must have the same size and colours")
        images.append(image)
    return np.stack(images)


def _describe(shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{height}×{width} {'grey' if channels == 1 else 'RGB'}"


def is_image_source(source: str) -> bool:
    """An image data set name (digits, mnist), a directory (PNG folder or MNIST-style IDX files) or a
    .npy array of 4 dimensions (N, C, H, W); a toy set's name always means the toy set."""
    return source in IMAGE_DATASETS or (source not in TOY_DATASETS and (Path(source).is_dir() or
                                                                        is_image_array(source)))


def is_image_array(source: str | Path) -> bool:
    """Whether ``source`` is a .npy file of a 4-D array (read from its header only)."""
    from flowforge.data.files import npy_layout

    layout = npy_layout(source)
    return layout is not None and len(layout[1]) == 4


def image_splits(source: str, seed: int = 0,
                 data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) images of ``source`` (see the module docstring for each split)."""
    if source == "digits":
        return _split_80_10_10(load_digits_images(), seed=0)
    if source == "mnist" and data_dir is None:
        raise FlowforgeError("mnist: give --data-dir DIR, the folder holding the four MNIST IDX .gz files")
    directory = Path(data_dir if source == "mnist" else source)
    if source == "mnist" or is_idx_directory(directory):
        train, test = load_mnist(directory)
        if len(train) <= MNIST_VALIDATION:
            raise FlowforgeError(f"{directory}: {len(train)} training images are too few to hold out "
                                 f"{MNIST_VALIDATION} for validation")
        return train[:-MNIST_VALIDATION], train[-MNIST_VALIDATION:], test
    images = read_image_array(directory) if is_image_array(directory) else read_png_folder(directory)
    if len(images) < MIN_IMAGES:
        raise FlowforgeError(f"{directory}: {len(images)} images are too few to split for training "
                             f"(need {MIN_IMAGES})")
    return _split_80_10_10(images, seed)


def read_image_array(path: str | Path) -> np.ndarray:
    """A .npy array of (N, C, H, W) 8-bit pixels, checked, as float32."""
    from flowforge.data.files import read_array

    images = read_array(path)
    if images.shape[1] not in (1, 3):
        raise FlowforgeError(f"{path}: holds images of {images.shape[1]} channels (shape {images.shape}); give "
                             "(N, C, H, W) with C = 1 (grey) or 3 (RGB)")
    check_pixels(images, path)
    return images.astype(np.float32)


def image_label_splits(source: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (train, validation, test) labels of a labelled image set, in :func:`image_splits`' order."""
    if source == "digits":
        return _split_80_10_10(load_digits_labelled()[1], seed=0)
    directory = Path(data_dir if source == "mnist" else source)
    if source == "mnist" or is_idx_directory(directory):
        train, test = load_mnist_labels(directory)
        return train[:-MNIST_VALIDATION], train[-MNIST_VALIDATION:], test
    raise FlowforgeError(f"{source}: PNG folders and image arrays carry no labels; --context label needs a labelled "
                         f"set ({', '.join(IMAGE_CLASSES)} or MNIST-style IDX files)")
