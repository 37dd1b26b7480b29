"""Run question sets through the pipeline and the baselines, and score every answer.

The pipeline is :class:`generation.service.PersonaService` exactly as users call it (``retrieve``
for the ranking, ``ask`` for the answer). Each baseline is a dense search over its own chunks,
answered by the same generator. Unless an index is named, everything runs on temporary indexes
built from the seed cards, so the user's index is never touched.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, get_args

from eval.baselines import BASELINES, publish_baseline
from eval.calibration import derive_coverage, derive_threshold
from eval.metrics import (
    AbstentionScore,
    abstention_score,
    adversarial_check,
    citation_score,
    citation_valid,
    cited_relevance,
    dedupe,
    first_on_point,
    mean,
    on_point,
    ranking_scores,
)
from eval.sets import FollowUpType, Question, QuestionSet, Thresholds
from generation.registry import generators
from generation.service import PersonaService
from generation.sources import with_sources
from generation.support import SUPPORT_THRESHOLD
from retrieval.conversation import NO_HISTORY, History, Message
from retrieval.embedder import CachedEmbedder, Embedder, create_embedder
from retrieval.errors import PersonaError
from retrieval.search import to_hits
from retrieval.settings import Settings
from retrieval.store import Store
from retrieval.types import Answer, Coverage, Hit, PersonaInfo
from retrieval.vector_cache import DiskCachedEmbedder, cache_path

TIMING_RUNS = 2  # retrieval is timed this often per question and the fastest run kept (less load noise)
RANK_DEPTH = 50  # hits fetched for ranking metrics: enough for ten distinct sections
PIPELINE = "pipeline"
ALONE = "alone"
NO_SIDECAR = "no-sidecar"
DENSE = "dense"
TIMED = frozenset({PIPELINE, ALONE, DENSE})
"""The configurations whose latencies are compared; the others' retrieval runs once."""
FIRST_TURN_METRICS = ("section.hit@1", "section.hit@3", "answer.first_on_point", "answer.cited_relevance",
                      "abstention.in_scope_refused")
FOLLOW_UP_TYPES: tuple[str, ...] = get_args(FollowUpType)
RANKING_METRICS = ("hit@1", "hit@3", "hit@5", "mrr", "ndcg@10")
Progress = Callable[[str, int, int], None]


@dataclass
class Configuration:
    """One way of answering: how it retrieves and how it answers from what it retrieved."""

    name: str
    description: str
    retrieve: Callable[[Question, History], tuple[PersonaInfo, list[Hit]]]
    answer: Callable[[Question, PersonaInfo, list[Hit], History], Answer]
    known_ids: Callable[[str], set[str]]
    item_ids: bool = True  # False when its chunks are not the card's items: id-level metrics are n/a
    coverage: Callable[[Question], Coverage] | None = None  # the last retrieval's coverage judgement (pipeline only)
    searched_for: Callable[[Question], str] | None = None  # what the last retrieval searched (pipeline only)
    conversations: bool = True  # run on conversation sets (each turn with the chat before it)
    questions: bool = True  # run on sets of single questions
    personas: frozenset[str] | None = None  # the personas it can answer (None: all)


@dataclass
class Record:
    """What one configuration did with one question, and how it scored."""

    id: str
    kind: str
    question: str
    sections: list[str]
    ids: list[str]
    top_score: float
    boundary: float
    latency_ms: float
    grounded: bool
    answer: str
    cited: list[str]
    ranking: dict[str, float] = field(default_factory=dict)
    id_ranking: dict[str, float] = field(default_factory=dict)
    citation_valid: bool = True
    sentences: int = 0
    supported: int = 0
    citations: int = 0
    precise: int = 0
    adversarial: dict[str, bool] = field(default_factory=dict)
    near: bool = False
    on_point: list[bool] = field(default_factory=list)  # per citation, in [n] order: does it answer the question?
    turn: int = 1  # its turn in a conversation (1 for a question of its own)
    follow_up: str | None = None  # how a later turn follows up (conversation sets)
    searched_for: str = ""  # what the retrieval searched (the standalone query of a follow-up)


@dataclass
class ConfigResult:
    name: str
    description: str
    metrics: dict[str, float | None]
    records: list[Record]


@dataclass
class SetResult:
    name: str
    description: str
    configs: dict[str, ConfigResult]
    conversational: bool = False  # a conversation set: its metrics are over the follow-ups
    persona: str = ""  # the card its questions ask about (the first one's, when several)


@dataclass(frozen=True)
class Failure:
    """A pipeline metric below the minimum declared for its question set."""

    set: str
    metric: str
    value: float | None
    minimum: float

    def line(self) -> str:
        if self.value is None:
            return f"{self.set}: {self.metric} is not a metric (threshold {self.minimum:.3f})"
        return f"{self.set}: {self.metric} = {self.value:.3f} is below the threshold {self.minimum:.3f}"


# -- one question ----------------------------------------------------------------------------
def evaluate(config: Configuration, question: Question, history: History = NO_HISTORY) -> Record:
    """Retrieve (timed), answer, and score one question with one configuration."""
    return _evaluate(config, question, history)[0]


def _evaluate(config: Configuration, question: Question, history: History) -> tuple[Record, Answer]:
    timings = []
    for _ in range(TIMING_RUNS if config.name in TIMED else 1):
        started = time.perf_counter()
        info, hits = config.retrieve(question, history)
        timings.append((time.perf_counter() - started) * 1000)
    latency_ms = min(timings)
    answer = config.answer(question, info, hits, history)
    judged = config.coverage(question) if config.coverage else None
    sections = dedupe(h.section for h in hits)
    ids = dedupe(h.id for h in hits)
    cited = {c.n: c.id for c in answer.citations}
    valid = citation_valid(answer.text, cited, [h.id for h in answer.hits or hits], config.known_ids(info.slug))
    score = citation_score(answer.text, {c.n: c.text for c in answer.citations})
    record = Record(
        id=question.id, kind=question.kind, question=question.question, sections=sections[:10], ids=ids[:10],
        top_score=judged.top if judged else hits[0].score if hits else 0.0, boundary=judged.boundary if judged else 0.0,
        latency_ms=round(latency_ms, 3), grounded=answer.grounded,
        answer=answer.text, cited=list(cited.values()), citation_valid=valid, sentences=score.sentences,
        supported=score.supported, citations=score.citations, precise=score.precise, near=question.near,
        turn=question.turn, follow_up=question.follow_up,
        searched_for=config.searched_for(question) if config.searched_for else question.question,
    )
    if question.kind == "in_scope":
        gold = question.gold
        record.ranking = ranking_scores(sections, gold.sections)
        if gold.answer_ids and config.item_ids:
            record.id_ranking = ranking_scores(ids, gold.answer_ids)
        grades = {c.id: gold.grade(c.id) for c in answer.citations}
        record.on_point = [on_point(c.id, c.section, grades, gold.sections)
                           for c in sorted(answer.citations, key=lambda c: c.n)]
    if question.kind == "adversarial":
        record.adversarial = asdict(adversarial_check(answer.text, answer.grounded, valid, score, info.title))
    return record, answer


# -- aggregates ------------------------------------------------------------------------------
def summarise(records: Sequence[Record]) -> dict[str, float | None]:
    """Every metric of one configuration on one question set (``None`` where it does not apply)."""
    metrics: dict[str, float | None] = {}
    for level, attr in (("section", "ranking"), ("id", "id_ranking")):
        scored = [getattr(r, attr) for r in records if getattr(r, attr)]
        for name in RANKING_METRICS:
            metrics[f"{level}.{name}"] = mean(s[name] for s in scored)
    answered = [r for r in records if r.grounded and r.sentences]
    metrics["citation.validity"] = mean(float(r.citation_valid) for r in records)
    metrics["citation.recall"] = mean(r.supported / r.sentences for r in answered)
    metrics["citation.precision"] = mean(r.precise / r.citations if r.citations else 0.0 for r in answered)
    abstention: AbstentionScore = abstention_score((r.kind, not r.grounded) for r in records)
    metrics["abstention.precision"] = abstention.precision
    metrics["abstention.recall"] = abstention.recall
    metrics["abstention.in_scope_answered"] = abstention.in_scope_answered
    cited = [r for r in records if r.kind == "in_scope" and r.grounded and r.on_point]
    metrics["answer.cited_relevance"] = mean(cited_relevance(r.on_point) or 0.0 for r in cited)
    metrics["answer.first_on_point"] = mean(first_on_point(r.on_point) or 0.0 for r in cited)
    metrics["abstention.in_scope_refused"] = abstention.in_scope_refused
    metrics["abstention.near_refused"] = mean(float(not r.grounded) for r in records
                                              if r.kind == "out_of_scope" and r.near)
    metrics["abstention.far_refused"] = mean(float(not r.grounded) for r in records
                                             if r.kind == "out_of_scope" and not r.near)
    metrics["adversarial.pass_rate"] = mean(float(all(r.adversarial.values())) for r in records if r.adversarial)
    latencies = [r.latency_ms for r in records]
    metrics["latency.mean_ms"] = mean(latencies)
    metrics["latency.p50_ms"] = statistics.median(latencies) if latencies else None
    return {k: (None if v is None else round(v, 4)) for k, v in metrics.items()}


def failures(results: Sequence[SetResult], thresholds: Thresholds) -> list[Failure]:
    """Pipeline metrics below their set's declared minimum. A metric the set cannot measure (n/a:
    no question of that kind) is not checked; a name that is no metric at all fails."""
    out = []
    for result in results:
        metrics = result.configs[PIPELINE].metrics
        for metric, minimum in thresholds.for_set(result.name).items():
            value = metrics.get(metric)
            if metric not in metrics or (value is not None and value < minimum):
                out.append(Failure(result.name, metric, value, minimum))
    return out


def summarise_conversations(records: Sequence[Record]) -> dict[str, float | None]:
    """A conversation set's metrics: every metric of :func:`summarise` over the follow-ups (turns after the
    first), then the first turns' main ones (``first_turn.*``) and, per follow-up type, how often its first
    citation was on point and how often it was refused (``<type>.first_on_point``, ``<type>.refused``)."""
    follow_ups = [r for r in records if r.turn > 1]
    metrics = summarise(follow_ups)
    first = summarise([r for r in records if r.turn == 1])
    for name in FIRST_TURN_METRICS:
        metrics[f"first_turn.{name}"] = first.get(name)
    for kind in FOLLOW_UP_TYPES:
        of_type = [r for r in follow_ups if r.follow_up == kind]
        cited = [r for r in of_type if r.kind == "in_scope" and r.grounded and r.on_point]
        metrics[f"{kind}.first_on_point"] = _round(mean(first_on_point(r.on_point) or 0.0 for r in cited))
        metrics[f"{kind}.refused"] = _round(mean(float(not r.grounded) for r in of_type))
    return metrics


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def run(sets: Sequence[QuestionSet], configs: Sequence[Configuration],
        progress: Progress | None = None) -> list[SetResult]:
    """Every question of every set through every configuration (questions outer, so load noise
    falls on all configurations alike). In a conversation set each turn is asked with the chat before it:
    the earlier questions and the configuration's own replies to them, as a chat client would send them."""
    def runs(config: Configuration, qset: QuestionSet) -> bool:
        return (config.conversations if qset.conversational else config.questions) and (
            config.personas is None or {q.persona for q in qset.questions} <= config.personas)

    plan = [(qset, [c for c in configs if runs(c, qset)]) for qset in sets]
    total = sum(len(s.questions) * len(chosen) for s, chosen in plan)
    done = 0
    results = []
    for qset, chosen in plan:
        records: dict[str, list[Record]] = {c.name: [] for c in chosen}
        chats: dict[str, list[Message]] = {c.name: [] for c in chosen}
        for question in qset.questions:
            for config in chosen:
                chat = chats[config.name] if question.turn > 1 else []
                record, answer = _evaluate(config, question, History(tuple(chat)))
                records[config.name].append(record)
                chats[config.name] = [*chat, Message("user", question.question),
                                      Message("assistant", with_sources(answer))]
                done += 1
                if progress:
                    progress(f"evaluating {qset.name}", done, total)
        summary = summarise_conversations if qset.conversational else summarise
        result = SetResult(qset.name, qset.description, {
            c.name: ConfigResult(c.name, c.description, summary(records[c.name]), records[c.name]) for c in chosen
        }, qset.conversational, qset.questions[0].persona)
        add_latency_ratio(result)
        if qset.conversational:
            add_follow_up_cost(result)
        results.append(result)
    return results


def add_follow_up_cost(result: SetResult) -> None:
    """``latency.follow_up_added_ms``: the median over follow-ups of the pipeline's retrieval latency with the
    conversation minus the same pipeline's on the follow-up alone, timed back to back."""
    alone = result.configs.get(ALONE)
    if alone is None:
        return
    for config in result.configs.values():
        added = [mine.latency_ms - base.latency_ms
                 for mine, base in zip(config.records, alone.records, strict=True) if mine.turn > 1]
        config.metrics["latency.follow_up_added_ms"] = round(statistics.median(added), 3) if added else None


def add_latency_ratio(result: SetResult) -> None:
    """``latency.ratio``: the median over questions of each configuration's retrieval latency divided
    by plain dense search's on the same question, timed back to back, so that load from other
    processes on a shared machine falls on both sides of each ratio."""
    reference = result.configs.get(DENSE)
    for config in result.configs.values():
        ratios = [mine.latency_ms / base.latency_ms
                  for mine, base in zip(config.records, reference.records, strict=True)
                  if base.latency_ms > 0] if reference else []
        config.metrics["latency.ratio"] = round(statistics.median(ratios), 3) if ratios else None


def calibrate(results: Sequence[SetResult]) -> dict[str, Any] | None:
    """The coverage thresholds derived from the pipeline's top and boundary scores on the dev set(s) of single
    questions (sets named ``*dev``; every such set when none is), by :func:`eval.calibration.derive_coverage`;
    and the single abstention threshold of :func:`eval.calibration.derive_threshold` (no boundary) beside it."""
    single = [r for r in results if not r.conversational]
    chosen = [r for r in single if r.name.endswith("dev")] or single
    records = [x for r in chosen for x in r.configs[PIPELINE].records]
    in_scope = [(x.top_score, x.boundary) for x in records if x.kind == "in_scope"]
    out_of_scope = [(x.top_score, x.boundary) for x in records if x.kind == "out_of_scope"]
    if not in_scope or not out_of_scope:
        return None
    single = derive_threshold([t for t, _ in in_scope], [t for t, _ in out_of_scope])
    coverage = derive_coverage(in_scope, out_of_scope)
    return {"sets": [r.name for r in chosen], "coverage": asdict(coverage), **asdict(single),
            "rule": "refuse every dev off-topic question with the fewest dev in-scope refusals "
                    "(eval/calibration.py: derive_coverage)"}


# -- configurations --------------------------------------------------------------------------
def pipeline_config(service: PersonaService, answering: PersonaService, generator: str,
                    name: str = PIPELINE, with_history: bool = True) -> Configuration:
    """The service as users call it: ``service`` retrieves (timed), ``answering`` answers (cached vectors), each
    turn of a conversation with the chat before it (``with_history``; without it, the turn alone)."""
    judged: dict[str, Coverage] = {}
    searched: dict[str, str] = {}

    def chat(history: History) -> History:
        return history if with_history else NO_HISTORY

    def retrieve(q: Question, history: History) -> tuple[PersonaInfo, list[Hit]]:
        found = service.search_conversation(q.question, chat(history), q.persona, RANK_DEPTH)
        judged[q.id], searched[q.id] = found.coverage, found.searched_for
        return found.info, found.hits

    def answer(q: Question, info: PersonaInfo, hits: list[Hit], history: History) -> Answer:
        return answering.ask(q.question, q.persona, generator=generator, history=chat(history))

    return Configuration(
        name=name,
        description=f"the project's retrieval ('{service.pipeline.name}' preset) and answering (PersonaService.ask)"
                    + ("" if with_history else ", every turn of a conversation alone, without the chat before it"),
        retrieve=retrieve,
        answer=answer,
        known_ids=_known_ids(service.store),
        coverage=lambda q: judged.get(q.id),
        searched_for=lambda q: searched.get(q.id, q.question),
        questions=with_history,
    )


def dense_config(name: str, description: str, service: PersonaService, answering: PersonaService, store: Store,
                 infos: dict[str, PersonaInfo], generator: str, item_ids: bool) -> Configuration:
    """Plain dense search over ``store`` (a follow-up alone); the same generator answers from the top
    ``default_k``."""
    def retrieve(q: Question, _history: History) -> tuple[PersonaInfo, list[Hit]]:
        info = infos[q.persona]
        return info, to_hits(store.query(info.slug, service.embed_query(q.question), RANK_DEPTH))

    def answer(q: Question, info: PersonaInfo, hits: list[Hit], _history: History) -> Answer:
        return answering.answer_from(info, q.question, hits[:service.settings.default_k], generator)

    return Configuration(name, description, retrieve, answer, _known_ids(store), item_ids=item_ids,
                         conversations=name == DENSE)


def _known_ids(store: Store) -> Callable[[str], set[str]]:
    cache: dict[str, set[str]] = {}

    def known(slug: str) -> set[str]:
        if slug not in cache:
            cache[slug] = {c.id for c in store.chunks(slug)}
        return cache[slug]

    return known


@contextlib.contextmanager
def configurations(settings: Settings, personas: Sequence[str], generator: str, use_index: bool,
                   embedder: Embedder | None = None, progress: Progress | None = None,
                   cards: Sequence[Path] = ()) -> Iterator[list[Configuration]]:
    """The pipeline and the baselines, on temporary indexes that are removed afterwards.

    The cards of ``personas`` are found among the seed cards (:func:`ingest.cards.default_cards`:
    ``settings.seeds_dir``, ``./seeds`` or the built-in card) and ``cards`` (files or folders: the eval cards).
    With ``use_index`` the pipeline reads the index of ``settings`` as it is; otherwise those cards, with their
    sidecars, are ingested into a temporary one. ``no-sidecar`` is the same pipeline over the cards ingested
    without their sidecars (what a card nobody enriched gets). The chunking baselines are built for the seed
    cards' personas.
    """
    from ingest.cards import default_cards, find_cards, load_card
    from ingest.indexer import ingest

    seeds = default_cards(settings.seeds_dir)
    found = {card.slug: (path, card) for path in find_cards([seeds, *cards]) for card in [load_card(path)]}
    missing = [slug for slug in personas if slug not in found]
    if missing:
        raise PersonaError(f"no card for persona {', '.join(map(repr, missing))} in {seeds}"
                           + "".join(f", {c}" for c in cards) + ": name it with --card")
    mine = [found[slug][0] for slug in personas]
    seeded = {card.slug for path in find_cards([seeds]) for card in [load_card(path)]}
    embedder = embedder or create_embedder(settings.model)
    with tempfile.TemporaryDirectory(prefix="persona-eval-", ignore_cleanup_errors=True) as tmp:
        # Indexing goes through the model's vector cache (texts embedded by an earlier run are not embedded
        # again); the questions do not: their embedding is part of the latency measured.
        indexing = DiskCachedEmbedder(embedder, cache_path(settings.models_dir, settings.model))
        if not use_index:
            settings = settings.model_copy(update={"data_dir": Path(tmp) / "pipeline", "chroma_url": None})
            ingest(mine, Store(settings), indexing, settings.model, settings.embed_batch_size, progress)
        bare = settings.model_copy(update={"data_dir": Path(tmp) / "no-sidecar", "chroma_url": None})
        ingest(mine, Store(bare), indexing, settings.model, settings.embed_batch_size, progress, sidecars=False)
        registry = generators(settings)
        service = PersonaService(settings, embedder=embedder, generators=registry)
        answering = PersonaService(settings, embedder=CachedEmbedder(embedder), store=service.store,
                                   generators=registry)
        answering.generator_name(generator)  # raises for an unknown generator, listing the available ones
        plain = PersonaService(bare, embedder=embedder, generators=registry)
        plain_answering = PersonaService(bare, embedder=answering.embedder, store=plain.store, generators=registry)
        for slug in personas:
            service.persona(slug)  # raises UnknownPersona when the index lacks it
        base_store = Store(settings.model_copy(update={"data_dir": Path(tmp) / "baselines", "chroma_url": None}))
        own = {slug: service.persona(slug) for slug in personas}
        configs = [pipeline_config(service, answering, generator),
                   pipeline_config(service, answering, generator, ALONE, with_history=False),
                   replace(pipeline_config(plain, plain_answering, generator, NO_SIDECAR),
                           description="the same pipeline over the cards ingested without their sidecars (no "
                                       "example or boundary questions: a card nobody enriched)", conversations=False),
                   dense_config(DENSE, "plain dense search over the pipeline's chunks (the latency reference)",
                                service, answering, service.store, own, generator, item_ids=True)]
        baselined = [slug for slug in personas if slug in seeded]
        for n, baseline in enumerate(BASELINES, start=1):
            infos = {slug: publish_baseline(baseline, found[slug][1], own[slug], base_store, indexing, settings.model)
                     for slug in baselined}
            configs.append(replace(dense_config(baseline.name, baseline.description, service, answering, base_store,
                                                infos, generator, item_ids=baseline.item_ids),
                                   personas=frozenset(baselined)))
            if progress:
                progress("building baselines", n, len(BASELINES))
        threads = _one_thread()  # indexing above used every core; the questions are timed on one
        try:
            yield configs
        finally:
            _threads(threads)


def _one_thread() -> int:
    """Run torch on one thread while questions are timed (returns the threads it ran on): on a shared machine
    several threads per process oversubscribe the cores and make per-query latency ten times worse and
    erratic, which would hide the ratios the report compares."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def report_data(results: Sequence[SetResult], settings: Settings, generator: str, thresholds: Thresholds,
                failed: Sequence[Failure]) -> dict[str, Any]:
    """Everything the run measured, as plain JSON-ready data."""
    return {
        "settings": {"model": settings.model, "min_score": settings.min_score, "default_k": settings.default_k,
                     "generator": generator, "support_threshold": SUPPORT_THRESHOLD, "rank_depth": RANK_DEPTH},
        "sets": [{"name": r.name, "description": r.description, "conversational": r.conversational,
                  "persona": r.persona, "configs": {
            name: {"description": c.description, "metrics": c.metrics, "records": [asdict(x) for x in c.records]}
            for name, c in r.configs.items()}} for r in results],
        "calibration": calibrate(results),
        "thresholds": {r.name: thresholds.for_set(r.name) for r in results},
        "failures": [asdict(f) for f in failed],
    }
