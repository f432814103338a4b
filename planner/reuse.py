"""What makes two pieces of planning work "the same": re-planned tasks that repeat finished
ones (which stops a re-plan loop), and requests of one template (the plan cache's key).
Pure functions."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_NON_WORD = re.compile(r"[\W_]+")


def _words(instruction: str) -> str:
    return " ".join(_NON_WORD.sub(" ", instruction.casefold()).split())


def _similar(a: str, b: str, threshold: float) -> bool:
    if a == b:
        return True
    wa, wb = set(a.split()), set(b.split())
    return bool(wa and wb) and len(wa & wb) / len(wa | wb) >= threshold


def repeats_work(
    instructions: Sequence[str], done_instructions: Iterable[str], *, overlap: float = 0.8, similarity: float = 0.9
) -> bool:
    """True when at least `overlap` of a new plan's task instructions redo work that already ran.

    Two instructions match when they are equal after folding case, punctuation and
    whitespace, or when their word sets overlap by `similarity` (Jaccard), so a re-plan
    that rephrases trivially still counts as a repeat.
    """
    done = {_words(s) for s in done_instructions}
    done.discard("")
    if not instructions or not done:
        return False
    repeated = sum(1 for text in instructions if any(_similar(_words(text), d, similarity) for d in done))
    return repeated / len(instructions) >= overlap


# Cache key for templated goals ------------------------------------------------------------------

# Order matters: URLs and emails contain digits and dots, quoted values may contain anything,
# and mixed letter-digit tokens (order ids, codes) must go before bare numbers split them.
_PLACEHOLDERS = (
    (re.compile(r"(?:\b(?:https?|ftp)://|\bwww\.)\S+", re.IGNORECASE), " <url> "),
    (re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+"), " <email> "),
    (re.compile(r"\"[^\"\n]*\"|\u201c[^\u201d\n]*\u201d|`[^`\n]*`|(?<!\w)'[^'\n]*'(?!\w)"), " <str> "),
    (re.compile(r"\b(?=[A-Za-z_\-]*\d)(?=[\d_\-]*[A-Za-z])[A-Za-z0-9_\-]+\b"), " <id> "),
    # Long digit runs (account, phone, order numbers) are numbers too: one placeholder, so
    # values of different lengths still share a key.
    (re.compile(r"\d+(?:[.,:/]\d+)*"), " <num> "),
)


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # content parts: text kept, anything else (an image...) by its type
        parts = [p for p in content if isinstance(p, dict)]
        return "\n".join(str(p.get("text", "")) if p.get("type") == "text" else f"<{p.get('type')}>" for p in parts)
    return "" if content is None else str(content)


def _shape_of(text: str) -> str:
    for pattern, placeholder in _PLACEHOLDERS:
        text = pattern.sub(placeholder, text)
    return " ".join(text.casefold().split())


def normalised_shape(messages: Sequence[Mapping[str, Any]]) -> str:
    """sha256 hex of the conversation with its variable parts replaced by placeholders.

    Numbers (digit runs of any length), quoted strings, emails, URLs and letter-digit codes become
    placeholders and case and whitespace are folded, so the same template filled with
    different values gives the same key, while a different goal gives a different one.
    """
    lines = [
        f"{str(message.get('role', '')).casefold()}: {_shape_of(_content_text(message.get('content')))}"
        for message in messages
    ]
    # The version prefix retires every old key when the normalisation changes.
    return hashlib.sha256(("shape-v1\n" + "\n".join(lines)).encode()).hexdigest()


def instructions_of(obj: Any) -> list[str]:
    """The task instructions of a planner reply, valid or not; "" for a task without one (never a repeat).
    A tool task reads as its call, so a re-plan calling the same tool the same way repeats it."""
    tasks = obj.get("tasks") if isinstance(obj, dict) else None
    if not isinstance(tasks, list):
        return []
    return [_instruction(t) for t in tasks]


def _instruction(task: Any) -> str:
    if not isinstance(task, dict):
        return ""
    if isinstance(task.get("tool"), str):
        return f"call {task['tool']} with {task.get('arguments')}"
    return task["instruction"] if isinstance(task.get("instruction"), str) else ""
