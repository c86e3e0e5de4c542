"""ViLaSR-data (ShareGPT/LLaMA-Factory) items → trl conversational vision format; missing images named."""

import json

import pytest
from PIL import Image

from vilasr_ros_training.data import MissingImagesError, load_sharegpt


def _folder(tmp_path, truncate=None, drop=None):
    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (64, 48), (10, 20, 30)).save(tmp_path / name)
    if truncate:
        data = (tmp_path / truncate).read_bytes()
        (tmp_path / truncate).write_bytes(data[: len(data) // 2])
    if drop:
        (tmp_path / drop).unlink()
    items = [
        {"conversations": [
            {"from": "human", "value": "<image>The index of the given image is 1.\n<image>Where is the chair?"},
            {"from": "gpt", "value": "<think> look </think> Action: Object Mapper\n```json\n[]\n```"},
            {"from": "human", "value": "<image>\nThe index of the given image is 3 (width: 64, height: 48). Continue"},
            {"from": "gpt", "value": "<think> done </think> Action: Answer\n<answer> A </answer>"}],
         "system": "SYS", "images": ["a.png", "b.png", "c.png"]},
    ]
    (tmp_path / "cold_start.json").write_text(json.dumps(items))
    (tmp_path / "role_content.json").write_text(json.dumps([
        {"messages": [{"role": "user", "content": "<image>How many?"}, {"role": "assistant", "content": "2"}],
         "images": ["a.png"]}]))
    return tmp_path / "cold_start.json"


def test_images_land_in_the_turns_that_mention_them(tmp_path):
    [first] = load_sharegpt(_folder(tmp_path))
    [second] = load_sharegpt(tmp_path / "role_content.json")
    roles = [m["role"] for m in first["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert [p["type"] for p in first["messages"][1]["content"]] == ["image", "text", "image", "text"]
    assert first["messages"][3]["content"][0] == {"type": "image"}
    assert first["messages"][3]["content"][1]["text"].startswith("\nThe index of the given image is 3")
    assert [p.rsplit("/", 1)[1] for p in first["images"]] == ["a.png", "b.png", "c.png"]
    assert second["messages"][0]["content"] == [{"type": "image"}, {"type": "text", "text": "How many?"}]


@pytest.mark.parametrize("broken", [{"drop": "b.png"}, {"truncate": "c.png"}])
def test_a_missing_or_truncated_image_is_reported_by_name(tmp_path, broken):
    path = _folder(tmp_path, **broken)
    with pytest.raises(MissingImagesError) as info:
        load_sharegpt(path)
    name = next(iter(broken.values()))
    assert info.value.missing == [name] and name in str(info.value)
