"""TensorBoard reads a fresh run's event file: TensorBoard's own EventAccumulator must find every column of
history.csv as a scalar tag with the same value at each epoch (to float32 precision), the per-step training loss,
and the pictures, which must decode as PNGs of the stated size. The check can fail: a history value moved by
1e-3 is not found.

    python tensorboard_check.py RUN_DIR
"""
import csv
import io
import sys

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run = sys.argv[1]
events = EventAccumulator(f"{run}/tensorboard", size_guidance={"scalars": 0, "images": 0})
events.Reload()
tags = events.Tags()
history = list(csv.DictReader(open(f"{run}/history.csv")))
columns = [c for c in history[0] if c != "epoch"]


def mismatches(shift=0.0):
    wrong = []
    for column in columns:
        points = {e.step: e.value for e in events.Scalars(column)}
        for row in history:
            text = row[column]
            expected = float(text) + shift
            got = points.get(int(row["epoch"]))
            # history.csv rounds (6 decimals, seconds 3, lr in %e); the event is float32
            mantissa = text.split("e")[0]
            decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
            exponent = int(text.split("e")[1]) if "e" in text else 0
            rounding = 0.5 * 10.0 ** (exponent - decimals)
            if got is None or abs(got - expected) > rounding + 1e-6 * abs(expected):
                wrong.append((column, row["epoch"], got, expected))
    return wrong


assert set(columns) <= set(tags["scalars"]), (columns, tags["scalars"])
assert not mismatches(), mismatches()
assert mismatches(1e-3), "a moved value went unnoticed: the check cannot fail"
steps = events.Scalars("step/loss")
assert len(steps) >= 10 and all(s.step % 10 == 0 for s in steps), [s.step for s in steps[:5]]
pictures = ("pictures/curves", "pictures/grid", "pictures/confusion")
assert set(pictures) <= set(tags["images"]), tags["images"]
for tag in pictures:
    image = events.Images(tag)[-1]
    picture = Image.open(io.BytesIO(image.encoded_image_string))
    assert picture.size == (image.width, image.height), (picture.size, image.width, image.height)
print(f"{run}: {len(columns)} scalar tags x {len(history)} epochs equal history.csv, {len(steps)} step losses, "
      f"pictures {', '.join(tags['images'])} decode")
