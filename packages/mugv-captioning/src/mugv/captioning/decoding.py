"""Batched greedy, sampling and beam-search decoding with a key/value cache.

Every function returns a :class:`Decoded`: token ids after ``<bos>`` (``<eos>`` kept, then
``<pad>``), a score per caption and, for the MoE decoder, the routing weights that produced each
word -- ``routing[b, t]`` is (layers, 3) for the step that emitted ``tokens[b, t]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mugv.captioning._errors import ConfigError
from mugv.captioning.graph import GraphBatch
from mugv.captioning.model import TSG
from mugv.captioning.vocab import Vocabulary

BOS, EOS, PAD = Vocabulary.bos_id, Vocabulary.eos_id, Vocabulary.pad_id


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, L) long
    scores: torch.Tensor  # (B,) summed log-probability (beam: divided by the length penalty)
    routing: torch.Tensor | None  # (B, L, layers, 3) float, None without experts

    def lengths(self) -> torch.Tensor:
        """Words per caption, ``<eos>`` excluded: (B,)."""
        return ((self.tokens != EOS) & (self.tokens != PAD)).sum(dim=1)


def _pad_after_eos(tokens: torch.Tensor) -> torch.Tensor:
    after = (tokens == EOS).long().cumsum(dim=1) - (tokens == EOS).long() > 0  # (B, L)
    return tokens.masked_fill(after, PAD)


@torch.no_grad()
def _sequential(model: TSG, graphs: GraphBatch, repeats: int, max_length: int, pick) -> Decoded:
    index = torch.arange(graphs.batch_size, device=graphs.edges.device).repeat_interleave(repeats)
    memories = model.encode(graphs).index_select(index)
    cache = model.start(memories)
    B = index.shape[0]
    last = torch.full((B, 1), BOS, dtype=torch.long, device=index.device)
    done = torch.zeros(B, dtype=torch.bool, device=index.device)
    scores = torch.zeros(B, device=index.device)
    tokens, routes = [], []
    for _ in range(max_length):
        logits, routing = model.step(last, cache)  # (B, 1, V), (B, 1, layers, E)
        logp = logits[:, -1].float().log_softmax(dim=-1)  # (B, V)
        nxt = pick(logp)  # (B,)
        nxt = nxt.masked_fill(done, PAD)
        scores += logp.gather(1, nxt[:, None])[:, 0].masked_fill(done, 0.0)
        tokens.append(nxt)
        if routing is not None:
            routes.append(routing[:, 0])
        done |= nxt == EOS
        last = nxt[:, None]
        if bool(done.all()):
            break
    routing = torch.stack(routes, dim=1) if routes else None
    return Decoded(torch.stack(tokens, dim=1), scores, routing)


def greedy(model: TSG, graphs: GraphBatch, *, max_length: int | None = None) -> Decoded:
    """Most likely word at every step."""
    return _sequential(
        model, graphs, 1, max_length or model.config.max_length, lambda logp: logp.argmax(dim=-1)
    )


def sample(
    model: TSG,
    graphs: GraphBatch,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
) -> Decoded:
    """``num_samples`` captions per graph, rows graph-major: (B * num_samples, L)."""
    if num_samples < 1 or not temperature > 0:
        raise ConfigError(
            f"sample needs num_samples >= 1 and temperature > 0; got {num_samples}, {temperature}"
        )

    def pick(logp: torch.Tensor) -> torch.Tensor:
        probs = (logp / temperature).softmax(dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return _sequential(model, graphs, num_samples, max_length or model.config.max_length, pick)


@torch.no_grad()
def beam_search(
    model: TSG,
    graphs: GraphBatch,
    *,
    beam_size: int = 5,
    length_penalty: float = 0.6,
    max_length: int | None = None,
) -> Decoded:
    """Beam search; finished beams are ranked by ``log p / ((5 + len) / 6) ** length_penalty``
    (GNMT), ``length_penalty=0`` ranks by plain log-probability."""
    if beam_size < 1 or length_penalty < 0:
        raise ConfigError(
            f"beam_search needs beam_size >= 1 and length_penalty >= 0; got {beam_size}, "
            f"{length_penalty}"
        )
    max_length = max_length or model.config.max_length
    B, K, dev = graphs.batch_size, beam_size, graphs.edges.device
    memories = model.encode(graphs).index_select(torch.arange(B, device=dev).repeat_interleave(K))
    cache = model.start(memories)
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one
    scores = scores.view(-1)  # (B*K,)
    done = torch.zeros(B * K, dtype=torch.bool, device=dev)
    tokens = torch.empty(B * K, 0, dtype=torch.long, device=dev)
    routing = None
    last = torch.full((B * K, 1), BOS, dtype=torch.long, device=dev)
    for _ in range(max_length):
        logits, route = model.step(last, cache)
        logp = logits[:, -1].float().log_softmax(dim=-1)  # (B*K, V)
        V = logp.shape[-1]
        finished = torch.full_like(logp, float("-inf"))
        finished[:, EOS] = 0.0  # a finished beam only repeats <eos>, at no cost
        logp = torch.where(done[:, None], finished, logp)
        cand = (scores[:, None] + logp).view(B, K * V)
        top, flat = cand.topk(K, dim=1)  # (B, K)
        beam = flat // V + torch.arange(B, device=dev)[:, None] * K  # source row in B*K
        word = flat % V
        beam, word = beam.view(-1), word.view(-1)
        scores = top.view(-1)
        cache = cache.index_select(beam, same_memories=True)  # beams stay in their graph
        tokens = torch.cat([tokens[beam], word[:, None]], dim=1)
        if route is not None:
            step_route = route[beam, 0][:, None]  # (B*K, 1, layers, E)
            routing = step_route if routing is None else torch.cat([routing[beam], step_route], 1)
        done = done[beam] | (word == EOS)
        last = word[:, None]
        if bool(done.all()):
            break
    tokens = _pad_after_eos(tokens)
    lengths = ((tokens != PAD).sum(dim=1)).float()  # words + <eos>
    normed = scores / ((5.0 + lengths) / 6.0) ** length_penalty
    best = normed.view(B, K).argmax(dim=1) + torch.arange(B, device=dev) * K  # (B,)
    return Decoded(tokens[best], normed[best], None if routing is None else routing[best])
