"""SubjectAccessReview answers for the webhooks, asked once per question within a short window.

A webhook request may ask up to one SubjectAccessReview per permission it judges; a burst of
requests (an orchestrator creating hundreds of identities, or someone replaying crafted reviews)
asks the same questions again and again. Within ``ttl`` seconds an answer is reused, so a repeated
question costs the API server nothing. An RBAC change therefore reaches admission within ``ttl``
(the API server's own webhook authorizer caches answers the same way).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from agent_identity.policy.facts import AccessReviews

ANSWER_TTL_SECONDS = 10.0
MAX_ANSWERS = 4096


class _Question(NamedTuple):
    user: str
    groups: tuple[str, ...]
    uid: str
    extra: tuple[tuple[str, tuple[str, ...]], ...]
    attributes: tuple[tuple[str, str], ...]


class CachedAccessReviews:
    """:class:`AccessReviews` that asks ``reviews`` each distinct question at most once per
    ``ttl`` seconds, keeping at most ``size`` answers (the least recently asked go first). Safe
    to share between the webhook's threads."""

    def __init__(
        self,
        reviews: AccessReviews,
        *,
        ttl: float = ANSWER_TTL_SECONDS,
        size: int = MAX_ANSWERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reviews, self._ttl, self._size, self._clock = reviews, ttl, size, clock
        self._answers: OrderedDict[_Question, tuple[bool, float]] = OrderedDict()
        self._lock = threading.Lock()

    def may(
        self, *, user: str, groups: tuple[str, ...], uid: str, extra: dict[str, tuple[str, ...]], attributes: dict[str, str]
    ) -> bool:
        question = _Question(
            user, tuple(groups), uid, tuple(sorted((k, tuple(v)) for k, v in extra.items())), tuple(sorted(attributes.items()))
        )
        now = self._clock()
        with self._lock:
            known = self._answers.get(question)
            if known is not None and known[1] > now:
                self._answers.move_to_end(question)
                return known[0]
        answer = self._reviews.may(user=user, groups=groups, uid=uid, extra=extra, attributes=attributes)
        with self._lock:
            self._answers[question] = (answer, now + self._ttl)
            self._answers.move_to_end(question)
            while len(self._answers) > self._size:
                self._answers.popitem(last=False)
        return answer
