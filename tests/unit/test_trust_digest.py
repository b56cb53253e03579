"""The digest that decides whether an inserted cell's outputs are the ones vouched for."""

from kernel_collab.sidecar.trust import outputs_digest

HTML = {"output_type": "display_data", "metadata": {}, "data": {"text/html": "<b>a</b>\n<i>b</i>"}}


def test_equal_outputs_however_encoded_have_one_digest() -> None:
    lines = {**HTML, "data": {"text/html": ["<b>a</b>\n", "<i>b</i>"]}}
    reordered = {"data": HTML["data"], "output_type": "display_data", "metadata": {}}
    counted = {"output_type": "execute_result", "execution_count": 3, "data": {}, "metadata": {}}
    as_float = {**counted, "execution_count": 3.0}
    assert outputs_digest([HTML]) == outputs_digest([lines]) == outputs_digest([reordered])
    assert outputs_digest([counted]) == outputs_digest([as_float])


def test_any_change_of_content_changes_the_digest() -> None:
    forged = {**HTML, "data": {"text/html": "<img src=x onerror=alert(1)>"}}
    assert outputs_digest([HTML]) != outputs_digest([forged])
    assert outputs_digest([HTML]) != outputs_digest([HTML, HTML])
    assert outputs_digest([]) != outputs_digest([HTML])
