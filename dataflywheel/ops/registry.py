"""Operator name -> "module:Class", loaded lazily; unknown names get a did-you-mean.

Adding an operator: write its file, then add one line here. Nothing is imported until it is used.
"""

from __future__ import annotations

import difflib
import importlib

from dataflywheel.errors import FlywheelError
from dataflywheel.ops.base import Op

REGISTRY: dict[str, str] = {
    # core: generic ops
    "filter": "dataflywheel.ops.core.filter:ColumnFilter",
    "sample": "dataflywheel.ops.core.sample:Sample",
    "sort": "dataflywheel.ops.core.sort:Sort",
    "head": "dataflywheel.ops.core.head:Head",
    "mix": "dataflywheel.ops.core.mix:Mix",
    "select_columns": "dataflywheel.ops.core.select_columns:SelectColumns",
    "rename": "dataflywheel.ops.core.rename:Rename",
    "generate": "dataflywheel.ops.core.generate:Generate",
    "group_select": "dataflywheel.ops.core.group_select:GroupSelect",
    "loop": "dataflywheel.ops.core.loop:RepeatSteps",
    # select: data selection
    "embed": "dataflywheel.ops.select.embed:Embed",
    "exact_dedup": "dataflywheel.ops.select.exact_dedup:ExactDedup",
    "minhash_dedup": "dataflywheel.ops.select.minhash_dedup:MinHashDedup",
    "rouge_dedup": "dataflywheel.ops.select.rouge_dedup:RougeDedup",
    "text_stats": "dataflywheel.ops.select.text_stats:TextStats",
    "token_length": "dataflywheel.ops.select.token_length:TokenLength",
    "language_id": "dataflywheel.ops.select.language:LanguageId",
    "refusal": "dataflywheel.ops.select.refusal:Refusal",
    "truncation": "dataflywheel.ops.select.truncation:Truncation",
    "copies_instruction": "dataflywheel.ops.select.copies_instruction:CopiesInstruction",
    "semdedup": "dataflywheel.ops.select.semdedup:SemDedup",
    "kcenter_select": "dataflywheel.ops.select.kcenter_select:KCenterSelect",
    "cluster_sample": "dataflywheel.ops.select.cluster_sample:ClusterSample",
    "diverse_filter": "dataflywheel.ops.select.diverse_filter:DiverseFilter",
    "ifd": "dataflywheel.ops.select.ifd:IFDScorer",
    "alpagasus": "dataflywheel.ops.select.alpagasus:AlpaGasusScorer",
    "deita": "dataflywheel.ops.select.deita:DeitaScorer",
    "panel_vote": "dataflywheel.ops.select.panel_vote:PanelVote",
    "prompt_uncertainty": "dataflywheel.ops.select.prompt_uncertainty:PromptUncertainty",
    "less": "dataflywheel.ops.select.less:LessSelect",
    "clues": "dataflywheel.ops.select.clues:CluesSelect",
    # enhance: data quality enhancement
    "coach_pairs": "dataflywheel.ops.enhance.coachlm:CoachPairs",
    "coachlm": "dataflywheel.ops.enhance.coachlm:CoachLM",
    "llm2llm": "dataflywheel.ops.enhance.llm2llm:LLM2LLM",
    "robustft_detect": "dataflywheel.ops.enhance.robustft:RobustFTDetect",
    "robustft_relabel": "dataflywheel.ops.enhance.robustft:RobustFTRelabel",
    "group_conditioned": "dataflywheel.ops.enhance.rebalance:GroupConditioned",
    "oversample": "dataflywheel.ops.enhance.rebalance:Oversample",
    "llmaaa": "dataflywheel.ops.enhance.llmaaa:LLMaAA",
    "toxicraft": "dataflywheel.ops.enhance.toxicraft:ToxiCraft",
    # evolve: self-evolution
    "self_refine": "dataflywheel.ops.evolve.self_refine:SelfRefine",
    "self_reward": "dataflywheel.ops.evolve.self_reward:SelfReward",
    "evolve_eval": "dataflywheel.ops.evolve.evolve_eval:EvolveEval",
    "judge_agreement": "dataflywheel.ops.evolve.judge_agreement:JudgeAgreement",
    # synthesize: synthetic data generation
    "self_instruct": "dataflywheel.ops.synthesize.self_instruct:SelfInstruct",
    "alice": "dataflywheel.ops.synthesize.alice:Alice",
    "blind_spots": "dataflywheel.ops.synthesize.blind_spots:BlindSpots",
    "cascade": "dataflywheel.ops.synthesize.cascade:Cascade",
    "data_advisor": "dataflywheel.ops.synthesize.data_advisor:DataAdvisor",
    "hybrid_generate": "dataflywheel.ops.synthesize.hybrid:HybridGenerate",
    "evol_instruct": "dataflywheel.ops.synthesize.evol_instruct:EvolInstruct",
    "knowledge_guided": "dataflywheel.ops.synthesize.knowledge_guided:KnowledgeGuided",
    "magpie": "dataflywheel.ops.synthesize.magpie:Magpie",
    "teacher_topk": "dataflywheel.ops.distill.teacher_topk:TeacherTopK",
    "distill": "dataflywheel.ops.distill.distill:Distill",
    "prune": "dataflywheel.ops.distill.prune:Prune",
    "lingua_label": "dataflywheel.ops.distill.lingua:LinguaLabel",
    "lingua_filter": "dataflywheel.ops.distill.lingua:LinguaFilter",
    "lingua_train": "dataflywheel.ops.distill.lingua:LinguaTrain",
    "compress": "dataflywheel.ops.distill.lingua:Compress",
    "xtok_distill": "dataflywheel.ops.distill.xtok:XtokDistill",
    "impossible_pairs": "dataflywheel.ops.distill.impossible:ImpossiblePairs",
    "impossible_refine": "dataflywheel.ops.distill.impossible:ImpossibleRefine",
    "synpo_prompter": "dataflywheel.ops.synthesize.synpo:SynPOPrompter",
    "synpo_improver": "dataflywheel.ops.synthesize.synpo:SynPOImprover",
    "synpo_pairs": "dataflywheel.ops.synthesize.synpo:SynPOPairs",
    "magpie_tag": "dataflywheel.ops.synthesize.magpie_tag:MagpieTag",
    # train
    "sft": "dataflywheel.ops.train.sft:SFT",
    "dpo": "dataflywheel.ops.train.dpo:DPO",
    # evaluate
    "eval_nll": "dataflywheel.ops.evaluate.nll:EvalNLL",
    "eval_accuracy": "dataflywheel.ops.evaluate.accuracy:EvalAccuracy",
    "eval_judge": "dataflywheel.ops.evaluate.judge:EvalJudge",
}


class UnknownOpError(FlywheelError):
    def __init__(self, name: str):
        self.name = name
        self.suggestions = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.7)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown operator '{name}'{hint} (`flywheel ops` lists them all)")


def get(name: str) -> type[Op]:
    """The operator class registered under `name`, imported on first use."""
    if name not in REGISTRY:
        raise UnknownOpError(name)
    module, cls_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module), cls_name)
    cls.name = name
    return cls


def register(name: str, target: str) -> None:
    """Add an operator from outside the package ("module:Class"), e.g. a project's own op."""
    if ":" not in target:
        raise FlywheelError(f"register('{name}'): target must look like 'package.module:ClassName'")
    REGISTRY[name] = target


def names() -> list[str]:
    return sorted(REGISTRY)
