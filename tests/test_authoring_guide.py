"""docs/authoring.md's Python blocks run, in order, in one namespace: the guide cannot go stale."""

import re
from pathlib import Path

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "authoring.md"


def test_the_guide_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)
    assert len(blocks) >= 6
    namespace: dict = {"__name__": "authoring_guide"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{GUIDE.name} block {index + 1}", "exec"), namespace)  # noqa: S102
    assert "drop-double-relu" in namespace["fxq"].available_passes()
