"""One ready vLLM replica's continuous batching, stepped event by event.

Each step (iteration) of the engine:

1. admits waiting requests in FIFO order while fewer than ``max_num_seqs`` run,
   their final KV footprint (prompt + output tokens) fits in ``kv_tokens``, and
   the step's prompt tokens stay within ``max_batched_tokens`` (the first
   request of a step is always admitted, so an oversized prompt is not stuck);
2. takes ``t = alpha + beta*running + gamma*prefill_tokens`` seconds (running
   includes the newly admitted requests);
3. every running request gains one token; a newly admitted one gets its first
   token at the end of the step (TTFT = arrival to that instant: queueing plus
   prefill); a request with ``O`` output tokens finishes ``O - 1`` steps later.

Speed: between changes (an admission, a finish) all steps are identical
(same ``running``, no prefill), so the engine jumps over them in one go: the
number of steps to the next finish comes from a heap of finish step indices.
The cost is a few operations per request, not per token.

Simplifications (documented in docs/simulation.md): no preemption (a request
is admitted only if its final KV footprint fits, where vLLM admits
optimistically and preempts); a step that starts before the time the fleet
advances to is completed whole; prompts are prefilled in one step (no
chunking across steps).
Tests: ``tests/unit/test_fleet.py::test_engine_*``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from .model import ModelParams


class RequestTable:
    """Per-request inputs and outcomes, indexed by request id (position in the trace)."""

    def __init__(self, arrival, prompt, output):
        import numpy as np

        self.arrival = np.asarray(arrival, dtype=float)
        self.prompt = np.asarray(prompt, dtype=np.int64)
        self.output = np.maximum(1, np.asarray(output, dtype=np.int64))
        n = len(self.arrival)
        self.first = np.full(n, np.nan)     # first-token time (unix s)
        self.finish = np.full(n, np.nan)    # last-token time
        self.replica = np.full(n, -1, dtype=np.int32)
        self.unserved = np.zeros(n, dtype=bool)
        self.P = self.prompt.tolist()
        self.O = self.output.tolist()
        self.A = self.arrival.tolist()
        self.max_ttft = 0.0
        self.max_e2e = 0.0


class Engine:
    """Continuous batching of one replica (see the module docstring)."""

    __slots__ = ("p", "req", "index", "waiting", "running", "it", "t_next", "kv_reserved", "sum_prompt",
                 "sum_admit", "draining", "n_done")

    def __init__(self, params: ModelParams, requests: RequestTable, index: int, start: float):
        self.p = params
        self.req = requests
        self.index = index
        self.waiting: deque[int] = deque()
        self.running: list[tuple[int, int]] = []   # heap of (finish step, request id)
        self.it = 0                                 # index of the next step
        self.t_next = start                         # when the next step may start
        self.kv_reserved = 0                        # final footprints of running requests (tokens)
        self.sum_prompt = 0                         # prompt tokens of running requests
        self.sum_admit = 0                          # sum of admission step indices of running requests
        self.draining = False
        self.n_done = 0

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def enqueue(self, rid: int, now: float) -> None:
        if self.idle and self.t_next < now:
            self.t_next = now
        self.waiting.append(rid)
        self.req.replica[rid] = self.index

    def kv_usage(self) -> float:
        """KV tokens in use now (prompts plus tokens generated so far) / capacity."""
        n = len(self.running)
        used = self.sum_prompt + n * self.it - self.sum_admit
        return min(1.0, used / self.p.kv_tokens)

    def advance_to(self, T: float) -> None:
        """Run every step that starts before ``T``."""
        p, req = self.p, self.req
        alpha, beta, gamma = p.alpha, p.beta, p.gamma
        P, O, A = req.P, req.O, req.A
        running, waiting = self.running, self.waiting
        while (running or waiting) and self.t_next < T:
            s = self.t_next
            admitted = 0
            pre = 0
            new: list[int] = []
            if waiting and len(running) < p.max_num_seqs:
                budget = p.max_batched_tokens
                cap = p.kv_tokens
                it = self.it
                while waiting and len(running) < p.max_num_seqs:
                    rid = waiting[0]
                    need = P[rid] + O[rid]
                    if self.kv_reserved + need > cap and running:
                        break
                    if admitted and pre + P[rid] > budget:
                        break
                    waiting.popleft()
                    admitted += 1
                    pre += P[rid]
                    self.kv_reserved += need
                    self.sum_prompt += P[rid]
                    self.sum_admit += it
                    heapq.heappush(running, (it + O[rid] - 1, rid))
                    new.append(rid)
            n = len(running)
            if admitted:
                end = s + alpha + beta * n + gamma * pre
                self._stamp_first(new, end)
                self._finish_through(self.it, end)
                self.it += 1
                self.t_next = end
                continue
            dt = alpha + beta * n
            f = running[0][0]
            k = f - self.it + 1
            k_before_T = math.ceil((T - s) / dt)
            if k_before_T < k:
                self.it += k_before_T
                self.t_next = s + k_before_T * dt
                return
            end = s + k * dt
            self.it += k
            self.t_next = end
            self._finish_through(f, end)

    def _stamp_first(self, new: list[int], end: float) -> None:
        req = self.req
        first, A = req.first, req.A
        for rid in new:
            first[rid] = end
            ttft = end - A[rid]
            if ttft > req.max_ttft:
                req.max_ttft = ttft

    def _finish_through(self, step: int, end: float) -> None:
        running, req = self.running, self.req
        while running and running[0][0] <= step:
            f, rid = heapq.heappop(running)
            req.finish[rid] = end
            e2e = end - req.A[rid]
            if e2e > req.max_e2e:
                req.max_e2e = e2e
            self.kv_reserved -= req.P[rid] + req.O[rid]
            self.sum_prompt -= req.P[rid]
            self.sum_admit -= f - req.O[rid] + 1
            self.n_done += 1
