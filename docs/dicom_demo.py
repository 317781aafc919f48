"""Stores a few bundled Fashion-MNIST test images as DICOM, the ways a PACS might send them
(the README's "Medical images" example): 16-bit MONOCHROME1 with a rescale and a window, 12-bit
RLE Lossless, and 8-bit without extension.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install pydicom numpy pillow
    /tmp/venv/bin/python docs/dicom_demo.py data/fashion-mnist/test dicom-demo
"""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage, generate_uid

source, target = Path(sys.argv[1]), Path(sys.argv[2])
images = [("Bag", "00078.png"), ("Sneaker", "00038.png"), ("Trouser", "00064.png")]


def save(pixels, path, *, bits, photometric="MONOCHROME2", slope=None, intercept=None, window=None, rle=False):
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid(entropy_srcs=[str(path)])
    ds.Modality, ds.PatientName = "OT", "Demo^Convnet"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16 if bits > 8 else 8, bits, bits - 1, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if rle:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


for class_name, name in images:
    p = np.asarray(Image.open(source / class_name / name).convert("L")).astype(np.uint16)
    stem = target / class_name / Path(name).stem
    # MONOCHROME1 (0 is white), stored 4 * (255 - p) + 100, modality = stored - 100, window over 0..1020
    save((4 * (255 - p) + 100).astype(np.uint16), stem.with_suffix(".mono1.dcm"), bits=16,
         photometric="MONOCHROME1", slope=1, intercept=-100, window=(510.0, 1021.0))
    save((p * 16).astype(np.uint16), stem.with_suffix(".rle.dcm"), bits=12, rle=True)
    save(p.astype(np.uint8), stem.parent / f"IM{name[:5]}", bits=8)
print("written to", target)
