"""The webhooks' SubjectAccessReview answers: each question asked once within its window."""

from __future__ import annotations

from agent_identity.admission.reviews import CachedAccessReviews


class CountingReviews:
    """Answers from a table of allowed (user, verb) pairs, counting the questions asked."""

    def __init__(self, allowed: set[tuple[str, str]]) -> None:
        self.allowed, self.asked = allowed, 0

    def may(
        self, *, user: str, groups: tuple[str, ...], uid: str, extra: dict[str, tuple[str, ...]], attributes: dict[str, str]
    ) -> bool:
        self.asked += 1
        return (user, attributes["verb"]) in self.allowed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ask(reviews: CachedAccessReviews, user: str, verb: str, *, groups: tuple[str, ...] = ("system:authenticated",)) -> bool:
    attributes = {"namespace": "support", "verb": verb, "group": "", "resource": "configmaps"}
    return reviews.may(user=user, groups=groups, uid="u", extra={}, attributes=attributes)


def test_a_repeated_question_is_answered_from_the_cache_until_its_window_ends() -> None:
    api, clock = CountingReviews({("alice", "get")}), Clock()
    reviews = CachedAccessReviews(api, ttl=10.0, clock=clock)
    assert [ask(reviews, "alice", "get") for _ in range(50)] == [True] * 50
    assert [ask(reviews, "mallory", "get") for _ in range(50)] == [False] * 50  # refusals too
    assert api.asked == 2
    clock.now += 10.0  # an RBAC change is seen once the window has passed
    api.allowed.clear()
    assert ask(reviews, "alice", "get") is False and api.asked == 3


def test_any_difference_in_the_question_is_another_question() -> None:
    api = CountingReviews({("alice", "get")})
    reviews = CachedAccessReviews(api, clock=Clock())
    assert ask(reviews, "alice", "get") is True
    assert ask(reviews, "alice", "list") is False
    assert ask(reviews, "alice", "get", groups=("system:masters",)) is True
    assert api.asked == 3  # a user claiming other groups never gets the answer asked for others


def test_the_cache_keeps_at_most_its_size_and_forgets_the_least_recently_asked() -> None:
    api = CountingReviews({("alice", "get")})
    reviews = CachedAccessReviews(api, size=2, clock=Clock())
    ask(reviews, "alice", "get")
    ask(reviews, "bob", "get")
    ask(reviews, "alice", "get")  # alice's answer is now the most recent
    ask(reviews, "carol", "get")  # bob's goes
    assert api.asked == 3
    ask(reviews, "alice", "get")
    assert api.asked == 3
    ask(reviews, "bob", "get")
    assert api.asked == 4
