"""The Dynamo stage: pool signals of a disaggregated Dynamo deployment (`analyzers.dynamo_pool`)
and the log lines that say what in its output could not be used.

Stable events (logged once when they start, and `dynamo_issue_cleared` once they end):
- `dynamo_frontend_no_workers`: a frontend scrape lists no worker for its model (nothing routes);
- `dynamo_worker_unjoined`: the frontend routes to a worker id that no scraped worker has;
- `dynamo_worker_unknown_to_frontend`: a scraped worker whose id the frontend does not list;
- `dynamo_worker_id_missing`: a Dynamo worker payload without its own id (cannot be joined);
- `dynamo_worker_gone`: a worker that was joined is no longer fresh or no longer listed;
- `dynamo_frontend_gone`: a frontend seen before is no longer fresh (its workers are then not
  reported gone: nothing says whether they are).
No value is made up for what is missing: the signals that need it are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from phaselens.analyzers.dynamo_pool import Issue, analyze_dynamo
from phaselens.analyzers.window import TargetWindow
from phaselens.logs import get_logger, log_event
from phaselens.model import Recommendation, Signal, Target
from phaselens.settings import Settings

_log = get_logger("dynamo")
_IssueKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(issue: Issue) -> _IssueKey:
    return issue.event, tuple(sorted(issue.fields.items()))


class DynamoStage:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._active: set[_IssueKey] = set()
        self._joined: dict[str, str] = {}
        self._frontends: set[str] = set()

    def __call__(
        self, now: float, fresh: Mapping[str, tuple[Target, TargetWindow]]
    ) -> tuple[Sequence[Signal], Sequence[Recommendation]]:
        found = analyze_dynamo(fresh, self.settings)
        issues = list(found.issues)
        self._frontends.update(found.frontends)
        for name in sorted(self._frontends - set(found.frontends)):
            issues.append(Issue("dynamo_frontend_gone", {"target": name}))
        if found.frontends:
            for wid, target in sorted(self._joined.items()):
                if wid not in found.joined:
                    issues.append(Issue("dynamo_worker_gone", {"target": target, "worker_id": wid}))
        if found.joined:
            # gone workers stay reported until a frontend joins the id again
            self._joined = {**{w: t for w, t in self._joined.items() if w not in found.joined}, **found.joined}
        self._report(issues)
        return found.signals, []

    def _report(self, issues: list[Issue]) -> None:
        keys = {_key(i): i for i in issues}
        for key, issue in keys.items():
            if key not in self._active:
                log_event(_log, issue.event, logging.WARNING, **issue.fields)
        for key in self._active - keys.keys():
            log_event(_log, "dynamo_issue_cleared", logging.INFO, issue=key[0], **dict(key[1]))
        self._active = set(keys)
