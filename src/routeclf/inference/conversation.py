"""A conversation (`messages`, as chat APIs and the vLLM semantic router send it) read as the
text a classifier or a detector scores.

A detector judges the whole conversation (`whole_conversation`): every user turn, and every tool
turn (content fetched from elsewhere, where injected instructions hide), in order, so that an
attack set up in one turn and cashed in later is read as one text.

A classifier routes the request: the latest user turn. A follow-up ("and why does that
happen?") says nothing alone, so the earlier user turns are its context; but a user who changes
the subject would be misrouted by the old topic. The rule: the latest user turn alone decides when its answer
is confident (at or above the model's threshold); otherwise the latest turn followed by the
earlier user turns, most recent first, is scored and decides. Assistant and system turns are
never read, by either: they are the router's own output or configuration, not the user's request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictStr

from routeclf.inference.decision import Policy, decide

ROLES = ("system", "user", "assistant", "tool", "developer")
CONTEXT_TURNS = 3  # earlier user turns kept as context; older ones rarely name today's topic


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # chat APIs add fields (name, tool_calls...) a router may pass on
    role: Literal[ROLES]  # type: ignore[valid-type]
    content: StrictStr


@dataclass(frozen=True)
class Conversation:
    latest: str  # the latest user turn
    context: str | None  # the latest user turn, then earlier user turns (most recent first); None without any


def read_messages(messages: list[Message] | list[dict[str, Any]]) -> Conversation:
    """The latest user turn and its context; a conversation without a non-empty user turn is refused."""
    turns = [Message.model_validate(m) if isinstance(m, dict) else m for m in messages]
    users = [m.content.strip() for m in turns if m.role == "user" and m.content.strip()]
    if not users:
        raise ValueError("messages holds no user turn with text: there is no request to classify")
    earlier = users[:-1][::-1][:CONTEXT_TURNS]
    return Conversation(users[-1], "\n".join([users[-1], *earlier]) if earlier else None)


JUDGED_ROLES = ("user", "tool")


def whole_conversation(messages: list[Message] | list[dict[str, Any]]) -> str:
    """Every user and tool turn with text, in order, one per line: what a detector judges."""
    turns = [Message.model_validate(m) if isinstance(m, dict) else m for m in messages]
    read = [m.content.strip() for m in turns if m.role in JUDGED_ROLES and m.content.strip()]
    if not any(m.role == "user" and m.content.strip() for m in turns):
        raise ValueError("messages holds no user turn with text: there is no request to judge")
    return "\n".join(read)


def gated_scores(latest: np.ndarray, context: np.ndarray, conversations: list[Conversation],
                 policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    """Per conversation, the latest turn's scores, or its context's where the latest alone is
    below the threshold and there is context; and where the context decided."""
    unsure = ~(decide(latest, policy).score >= policy.threshold)
    use_context = unsure & np.array([c.context is not None for c in conversations], dtype=bool)
    return np.where(use_context[:, None], context, latest), use_context


def conversation_scores(
    score: Callable[[list[str]], np.ndarray], conversations: list[Conversation], policy: Policy
) -> tuple[np.ndarray, np.ndarray]:
    """Scores per conversation under the rule above (the context is scored only where needed),
    and whether the context decided."""
    latest = np.asarray(score([c.latest for c in conversations]))
    _, use_context = gated_scores(latest, latest, conversations, policy)
    scores = latest.copy()
    index = np.flatnonzero(use_context)
    if len(index):
        scores[index] = score([conversations[i].context for i in index])
    return scores, use_context
