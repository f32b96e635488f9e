"""One ready vLLM replica, scheduled as vLLM's V1 scheduler does, stepped event by event.

KV cache: ``kv_tokens // block_size`` blocks of ``block_size`` tokens (vLLM's
paged attention; 16 by default). A request that has computed ``c`` tokens (its
KV slots filled) holds ``ceil(c / block_size)`` blocks.

Each step (iteration) of the engine, in vLLM V1's order
(``vllm/v1/core/sched/scheduler.py``, ``Scheduler.schedule``):

1. **running requests first**, oldest first, within a token budget of
   ``max_batched_tokens``: a decoding request costs one token and takes a new
   block when its last block is full (its computed count is a multiple of
   ``block_size``); a request part-way through a chunked prefill takes
   ``min(rest of its prefill, budget left)`` tokens and the blocks they need;
2. **preemption by recompute** when a running request needs a block and none is
   free: the newest running request is preempted (back to the FRONT of the
   waiting queue, its blocks freed, its computed tokens forgotten), again until
   the block is found; a request that has to preempt itself stops the step's
   scheduling. A preempted request later recomputes its prompt plus the tokens
   it had already produced (its prefill is ``prompt + generated`` tokens); the
   output it produced is not emitted again, its first-token time stays;
3. only if nothing was preempted in the step, **waiting requests** in FIFO order
   while fewer than ``max_num_seqs`` run and budget is left: the head gets
   ``min(prefill tokens, budget left)`` tokens (chunked prefill: a long prompt is
   prefilled across several steps) if the blocks of that chunk are free (its
   prompt's blocks, not its final footprint), else admission stops;
4. the step takes ``t = alpha + beta * scheduled_sequences + gamma *
   prefill_tokens`` seconds; a request whose prefill completes emits a token at
   the end of the step (its first: TTFT = arrival to then), every decoding request
   one token; a request with ``O`` output tokens finishes when it has ``O``.

The decode-first order of step 1 is V1's running order: a request part-way through
its prefill is always the newest running one (it took the whole budget left in
the step that admitted it, so nothing was admitted after it).

Speed: between changes (an admission, a finish, a preemption) the steps are
identical (same sequences, no prefill) except for the blocks they take. A
decoding request takes a block every ``block_size`` steps, at steps
``s = phase (mod block_size)`` with ``phase`` fixed at its prefill, so a count
of decoding requests per phase gives the blocks the next ``k`` steps take in
``O(block_size)``: the engine jumps over every step up to the next finish, the
next time it is read, or the step where the free blocks run out, whichever
comes first. The cost is a few operations per request and per preemption, not
per token.

A request whose final footprint (``prompt + output - 1`` tokens) cannot fit in
the whole cache is rejected at once (vLLM refuses prompts beyond what the cache
holds): it is unserved. Simplifications (docs/simulation.md): no prefix cache (a
recompute is paid in full); a step that starts before the time the fleet
advances to is completed whole.
Tests: ``tests/unit/test_scheduler.py`` (invariants over random workloads, the
scheduler's rules one by one) and ``tests/unit/test_fleet.py::test_engine_*``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque

from .model import ModelParams

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3


class RequestTable:
    """Per-request inputs, scheduling state and outcomes, indexed by request id (position in the trace)."""

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
        self.preempted = np.zeros(n, dtype=np.int32)   # times the request was preempted
        self.P = self.prompt.tolist()
        self.O = self.output.tolist()
        self.A = self.arrival.tolist()
        # scheduling state (plain lists: the engine's hot loops index them)
        self.state = [WAITING] * n
        self.gen = [0] * n        # output tokens produced so far (set at a prefill's end and at a preemption)
        self.need = [0] * n       # tokens of the current prefill (prompt + generated)
        self.done = [0] * n       # of those, computed so far
        self.base = [0] * n       # a decoding request has computed base + s tokens before step s
        self.fstep = [0] * n      # step at whose end a decoding request finishes
        self.max_ttft = 0.0
        self.max_e2e = 0.0


class Engine:
    """vLLM V1 scheduling of one replica (see the module docstring)."""

    __slots__ = ("p", "req", "index", "waiting", "running", "prefilling", "heap", "cnt", "n_dec", "it", "t_next",
                 "used", "blocks", "bs", "draining", "n_done", "preemptions", "prefill_tokens", "recompute_tokens", "log")

    def __init__(self, params: ModelParams, requests: RequestTable, index: int, start: float):
        self.p = params
        self.req = requests
        self.index = index
        self.waiting: deque[int] = deque()
        self.running: dict[int, None] = {}      # running requests in scheduling order (oldest first)
        self.prefilling: list[int] = []         # running requests part-way through a chunked prefill
        self.heap: list[tuple[int, int]] = []   # (finish step, request id) of decoding requests (stale kept)
        self.bs = params.block_size
        self.cnt = [0] * self.bs                # decoding requests per block phase
        self.n_dec = 0                          # decoding requests
        self.it = 0                             # index of the next step
        self.t_next = start                     # when the next step may start
        self.blocks = params.kv_tokens // params.block_size
        self.used = 0                           # KV blocks in use
        self.draining = False
        self.n_done = 0
        self.preemptions = 0                    # preemption events
        self.prefill_tokens = 0                 # tokens prefilled (recomputes included)
        self.recompute_tokens = 0               # of those, recomputed after a preemption
        self.log: list | None = None            # tests: a list gets (step, sequences, decodes, prefill tokens,
                                                # blocks used) of every step run in full

    @property
    def idle(self) -> bool:
        return not self.running and not self.waiting

    def enqueue(self, rid: int, now: float) -> None:
        req = self.req
        req.replica[rid] = self.index
        if -(-(req.P[rid] + req.O[rid] - 1) // self.bs) > self.blocks:
            req.unserved[rid] = True    # can never fit: vLLM rejects it
            return
        if self.idle and self.t_next < now:
            self.t_next = now
        self.waiting.append(rid)

    def kv_usage(self) -> float:
        """Fraction of the KV blocks in use (``vllm:kv_cache_usage_perc``)."""
        return self.used / self.blocks

    # -- preemption ---------------------------------------------------------------------------------
    def _preempt_last(self, decode_allocated: bool) -> int:
        """Preempt the newest running request: its blocks freed, back to the front of the queue.
        ``decode_allocated``: this step's decode blocks are already taken (the request holds the block of the
        token it computes in this step)."""
        req, bs = self.req, self.bs
        rid, _ = self.running.popitem()
        if req.state[rid] == DECODE:
            c = req.base[rid] + self.it
            req.gen[rid] = c - req.P[rid] + 1
            if decode_allocated:
                c += 1
            self.cnt[(-req.base[rid]) % bs] -= 1
            self.n_dec -= 1
        else:
            c = req.done[rid]
            self.prefilling.remove(rid)
        self.used -= -(-c // bs)
        req.state[rid] = WAITING
        req.preempted[rid] += 1
        self.preemptions += 1
        self.waiting.appendleft(rid)
        return rid

    # -- time -----------------------------------------------------------------------------------------
    def advance_to(self, T: float) -> None:
        """Run every step that starts before ``T``."""
        p, req = self.p, self.req
        alpha, beta, gamma = p.alpha, p.beta, p.gamma
        budget0, mns, bs, nblocks = p.max_batched_tokens, p.max_num_seqs, self.bs, self.blocks
        P = req.P
        state, base, fstep, need, done, gen = req.state, req.base, req.fstep, req.need, req.done, req.gen
        running, waiting, heap, cnt, prefilling = self.running, self.waiting, self.heap, self.cnt, self.prefilling
        while (running or waiting) and self.t_next < T:
            s = self.t_next
            it = self.it
            # drop stale heap entries (preempted requests)
            while heap and (state[heap[0][1]] != DECODE or fstep[heap[0][1]] != heap[0][0]):
                heapq.heappop(heap)
            n_dec = self.n_dec
            if n_dec and not prefilling:
                # -- fast path: identical decode steps up to the next change --------------------------
                free = nblocks - self.used
                blocked = True
                if waiting and len(running) < mns and budget0 > n_dec:
                    rid = waiting[0]
                    chunk = min(P[rid] + gen[rid], budget0 - n_dec)
                    blocked = -(-chunk // bs) > free - cnt[it % bs]
                if blocked:
                    dt = alpha + beta * n_dec
                    k = heap[0][0] - it + 1
                    k_T = math.ceil((T - s) / dt)
                    if k_T < k:
                        k = k_T
                    tot = n_dec
                    q, r = divmod(k, bs)
                    take = q * tot
                    for j in range(r):
                        take += cnt[(it + j) % bs]
                    if take > free:      # the blocks run out first: jump to the step before
                        q = free // tot
                        left = free - q * tot
                        j = 0
                        while j < bs and cnt[(it + q * bs + j) % bs] <= left:
                            left -= cnt[(it + q * bs + j) % bs]
                            j += 1
                        k = q * bs + j
                        take = free - left
                    if k >= 1:
                        self.used += take
                        end = s + k * dt
                        self.it = it + k
                        self.t_next = end
                        self._finish_through(it + k - 1, end)
                        continue
            # -- one step in full ----------------------------------------------------------------------
            budget = budget0
            preempted = False
            n_seq = 0
            pre = 0
            if n_dec:
                want = cnt[it % bs]
                if want <= nblocks - self.used:
                    self.used += want
                else:
                    phase = it % bs
                    for rid in list(running):
                        if rid not in running or state[rid] != DECODE or (-base[rid]) % bs != phase:
                            continue
                        while self.used >= nblocks:
                            preempted = True
                            if self._preempt_last(False) == rid:
                                break
                        if rid not in running:
                            break             # it preempted itself: the step schedules nothing more
                        self.used += 1
                n_dec = self.n_dec
                budget -= n_dec
                n_seq = n_dec
            completes: list[int] = []
            if prefilling:
                for rid in list(prefilling):
                    if budget <= 0 or rid not in running:
                        break
                    c = done[rid]
                    chunk = min(need[rid] - c, budget)
                    more = -(-(c + chunk) // bs) - (-(-c // bs))
                    while more > nblocks - self.used:
                        preempted = True
                        if self._preempt_last(True) == rid:
                            break
                    if rid not in running:
                        break
                    self.used += more
                    if gen[rid]:
                        self.recompute_tokens += chunk
                    done[rid] = c + chunk
                    budget -= chunk
                    pre += chunk
                    n_seq += 1
                    if c + chunk == need[rid]:
                        prefilling.remove(rid)
                        completes.append(rid)
            if not preempted:
                while waiting and budget > 0 and len(running) < mns:
                    rid = waiting[0]
                    g = gen[rid]
                    n_need = P[rid] + g
                    chunk = n_need if n_need <= budget else budget
                    blk = -(-chunk // bs)
                    if blk > nblocks - self.used:
                        break
                    waiting.popleft()
                    running[rid] = None
                    state[rid] = PREFILL
                    need[rid] = n_need
                    done[rid] = chunk
                    self.used += blk
                    budget -= chunk
                    pre += chunk
                    n_seq += 1
                    if g:
                        self.recompute_tokens += chunk
                    if chunk == n_need:
                        completes.append(rid)
                    else:
                        prefilling.append(rid)
            if not n_seq:
                continue   # everything was preempted: nothing ran; the next pass admits from the queue
            if self.log is not None:
                self.log.append((it, n_seq, self.n_dec, pre, self.used))
            end = s + alpha + beta * n_seq + gamma * pre
            self.prefill_tokens += pre
            if completes:
                self._complete_prefills(completes, it, end)
            self.it = it + 1
            self.t_next = end
            if heap:
                self._finish_through(it, end)

    def _complete_prefills(self, completes: list[int], it: int, end: float) -> None:
        req, bs, cnt, running, heap = self.req, self.bs, self.cnt, self.running, self.heap
        first, A, gen, O, state = req.first, req.A, req.gen, req.O, req.state  # noqa: E741 (O: output tokens, as in the model)
        for rid in completes:
            g = gen[rid] + 1
            gen[rid] = g
            if g == 1:
                first[rid] = end
                ttft = end - A[rid]
                if ttft > req.max_ttft:
                    req.max_ttft = ttft
            n = req.need[rid]
            if g >= O[rid]:
                del running[rid]
                self.used -= -(-n // bs)
                self._finished(rid, end)
                continue
            b = n - it - 1
            req.base[rid] = b
            state[rid] = DECODE
            cnt[(-b) % bs] += 1
            self.n_dec += 1
            f = it + O[rid] - g
            req.fstep[rid] = f
            heapq.heappush(heap, (f, rid))

    def _finished(self, rid: int, end: float) -> None:
        req = self.req
        req.state[rid] = DONE
        req.gen[rid] = req.O[rid]
        req.finish[rid] = end
        e2e = end - req.A[rid]
        if e2e > req.max_e2e:
            req.max_e2e = e2e
        self.n_done += 1

    def _finish_through(self, step: int, end: float) -> None:
        heap, req, running, bs = self.heap, self.req, self.running, self.bs
        state, fstep, base, cnt = req.state, req.fstep, req.base, self.cnt
        while heap and heap[0][0] <= step:
            f, rid = heapq.heappop(heap)
            if state[rid] != DECODE or fstep[rid] != f:
                continue
            del running[rid]
            b = base[rid]
            self.used -= -(-(b + f + 1) // bs)
            cnt[(-b) % bs] -= 1
            self.n_dec -= 1
            self._finished(rid, end)
