"""One strict converter from kernel (iopub) message contents to nbformat v4 outputs: a content
that cannot become a valid output raises :class:`MalformedOutput` saying why."""

from __future__ import annotations

import json
import re
from typing import Any, Final, TypeGuard

Output = dict[str, Any]

_JSON_MIME: Final = re.compile(r"^application/(.*\+)?json$")


class MalformedOutput(ValueError):
    """A message that cannot become a valid nbformat output; the text says why."""


def output_from_message(msg_type: str, content: object) -> Output:
    """The output a ``stream``, ``display_data``, ``execute_result`` or ``error`` makes."""
    body = message_content(content)
    if msg_type == "stream":
        name, text = stream_content(body)
        return {"output_type": "stream", "name": name, "text": text}
    if msg_type in ("display_data", "execute_result"):
        return rich_output(msg_type, body)
    if msg_type == "error":
        return error_output(body)
    raise MalformedOutput(f"{msg_type} is not an output message")


def utf8(text: str) -> str:
    """``text`` with lone surrogates (which cannot be stored) replaced."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text


def message_content(content: object) -> dict[str, Any]:
    if not isinstance(content, dict):
        raise MalformedOutput(f"content is a {type(content).__name__}, not a dict")
    return content


def stream_content(content: dict[str, Any]) -> tuple[str, str]:
    name = content.get("name")
    if not isinstance(name, str):
        raise MalformedOutput("name must be a string")
    text = content.get("text")
    if is_str_list(text):
        text = "".join(text)
    if not isinstance(text, str):
        raise MalformedOutput("text must be a string")
    return name, utf8(text)


def rich_output(msg_type: str, content: dict[str, Any]) -> Output:
    """A display_data or execute_result output (``transient`` is not stored: nbformat
    forbids it)."""
    output: Output = {
        "output_type": msg_type,
        "data": mimebundle(content.get("data")),
        "metadata": metadata_of(content.get("metadata")),
    }
    if msg_type == "execute_result":
        count = content.get("execution_count")
        if "execution_count" not in content or not is_count(count):
            raise MalformedOutput("execution_count must be a non-negative integer or null")
        output["execution_count"] = count
    return output


def error_output(content: dict[str, Any]) -> Output:
    ename, evalue, traceback = (content.get(k) for k in ("ename", "evalue", "traceback"))
    if not isinstance(ename, str) or not isinstance(evalue, str):
        raise MalformedOutput("ename and evalue must be strings")
    if not is_str_list(traceback):
        raise MalformedOutput("traceback must be a list of strings")
    output = {"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback}
    json_size(output)
    return output


def mimebundle(data: object) -> dict[str, Any]:
    """``data`` checked as nbformat wants: str or list of str, any JSON for JSON types."""
    if not isinstance(data, dict):
        raise MalformedOutput("data must be a dict of mime type to content")
    for mime, value in data.items():
        if not isinstance(mime, str):
            raise MalformedOutput(f"mime type {mime!r} is not a string")
        if not (isinstance(value, str) or is_str_list(value) or _JSON_MIME.match(mime)):
            raise MalformedOutput(
                f"data[{mime!r}] is a {type(value).__name__}, not a string or list of strings"
            )
    return data


def metadata_of(metadata: object) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise MalformedOutput("metadata must be a dict")
    return metadata


def display_id_of(content: dict[str, Any]) -> str | None:
    transient = content.get("transient")
    display_id = transient.get("display_id") if isinstance(transient, dict) else None
    return display_id if isinstance(display_id, str) and display_id else None


def json_size(output: Output) -> int:
    """Bytes of ``output`` as compact UTF-8 JSON; raises if it is not storable JSON."""
    try:
        encoded = json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:  # not JSON, or text that is not valid UTF-8
        raise MalformedOutput(f"not storable as JSON ({exc})") from exc
    return len(encoded)


def is_count(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def is_str_list(value: object) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
