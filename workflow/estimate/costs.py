"""What each job of a study costs: tokens it processes, bytes it writes, its peak memory, and its
work in the units the throughput table measures (`throughputs.yaml`).

A job's time on a machine is the job start-up there plus, for each kind of work, the amount over the
machine's rate for it (times the job's threads, where the figures are per thread). The kinds:

- ``forward_flops`` / ``train_flops``: model FLOPs, 2 x parameters x tokens forward and 3 x that to
  train (Kaplan et al. 2020), with the attention over the documents' mean length (MiniLM's 6 x 384 and
  bert-base's 12 x 768 ran at the same FLOP/s here: 6.0e10 and 6.5e10 per thread);
- ``sae_train``: d_in x d_sae per training token (TopK and ReLU alike: their step is bounded by the
  encoder's matrix product, the sparse parts are cheaper); ``crosscoder_train``: the same over both
  sides' d_in; ``sae_encode``: d_in x d_sae per encoded token;
- ``train_steps`` (per step and layer) and ``sae_steps``: the per-step overheads that dominate small
  models and SAEs (Python, optimizer, kernel launches);
- ``<rule>_s``: the fixed work of the small analysis jobs (fits, tables, plots), per job.

Disk is exact where the stage's output is a dense array (activation sets, model weights, SAE
weights) and per-feature or per-job sizes measured on the default study otherwise (tables,
examples, report data): those are a few percent of a study's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workflow.estimate.sizes import Sizes

GB = 1 << 30
DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
LIGHT_MEMORY = 0.2 * GB  # a job's resident memory without torch (summaries, reports; default study, max_rss)
BASE_MEMORY = 0.6 * GB  # ... with torch and transformers imported and an activation set open
MODEL_MEMORY = 0.6 * GB  # ... with a model's code
TOKENIZER_BYTES = 0.75e6  # tokenizer files saved beside a model's weights
FEATURE_EXAMPLE_BYTES = 1.2  # examples.parquet, per (example x context token) of a feature
FEATURE_ROW_BYTES = 120  # features.parquet, per feature
REPORT_EXAMPLE_BYTES = 16  # the report's feature data (JSON), per (example x context token)
SAE_PLOTS = 95e3  # features.png + sentence.png of an SAE


@dataclass
class Cost:
    tokens: int = 0
    disk: float = 0.0
    memory: float = BASE_MEMORY
    work: dict[str, float] = field(default_factory=dict)

    def add(self, kind: str, amount: float) -> Cost:
        self.work[kind] = self.work.get(kind, 0.0) + amount
        return self


class Costs:
    """Cost of each job of a study (`cost(rule, wildcards)`)."""

    def __init__(self, study: dict, sizes: Sizes):
        from workflow.plan import Plan

        self.study, self.sizes, self.plan = study, sizes, Plan(study)

    # ------------------------------------------------------------ helpers

    def _forward(
        self, cost: Cost, model: str, dataset: str, tokens: float, head: bool = False, train: bool = False, lora=False
    ):
        """Forward FLOPs, or to train: forward + backward, 3x (LoRA: 2x, frozen weights take no
        weight gradients; the adapters' own are negligible)."""
        flops = self.sizes.forward_flops(model, dataset, head) * tokens
        return cost.add("train_flops" if train else "forward_flops", (2 if lora else 3) * flops if train else flops)

    def _model_memory(self, model: str, dataset: str, batch_docs: int, train: bool = False, lora=False) -> float:
        """Weights (and to train: gradients and Adam's two moments), and activations: about 34 values
        per token and layer at d_model plus the attention maps (Korthikanti et al. 2022), kept for the
        backward pass when training, a layer or two at a time otherwise; a batch pads to its longest
        document (taken as twice the mean, at most max_length)."""
        s = self.sizes.shape(model)
        length = min(self.study["models"][model]["max_length"], 2 * self.sizes.mean_tokens(model, dataset))
        per_layer = batch_docs * length * (34 * s.d_model + 5 * s.n_heads * length) * 4
        weights = s.params * 4 * (4 if train and not lora else 1)  # training: + gradients and Adam's moments
        return MODEL_MEMORY + weights + per_layer * (s.n_layers if train else 2)

    def _d_sae(self, recipe: dict, d_in: int) -> int:
        return recipe.get("d_sae") or recipe["expansion_factor"] * d_in

    def _sae_bytes(self, d_in: int, d_sae: int, sides: int = 1) -> float:
        return (2 * sides * d_in * d_sae + d_sae + sides * d_in) * 4

    def _examples(self, d_sae: int) -> float:
        f = self.study["features"]
        return d_sae * (f["n_top"] + f["n_quantiles"] * f["per_quantile"]) * (2 * f["window"] + 1)

    def _test_tokens(self, model: str, dataset: str, cap: int | None = None) -> int:
        n = self.sizes.tokens(model, dataset, "test")
        return n if cap is None else min(n, cap)

    def _docs_tokens(self, model: str, dataset: str, docs: int | None, split: str = "test") -> float:
        n = self.sizes.split(dataset, split).docs
        return self.sizes.mean_tokens(model, dataset, split) * (n if docs is None else min(n, docs))

    # ------------------------------------------------------------ per rule

    def cost(self, rule: str, w: dict) -> Cost:
        return getattr(self, f"_{rule}", self._small)(rule, w)

    def _small(self, rule: str, w: dict) -> Cost:
        """Gathering, summary and report jobs: fixed work, small outputs."""
        return Cost(disk=SMALL_DISK.get(rule, 20e3), memory=LIGHT_MEMORY).add(f"{rule}_s", 1)

    def _dataset(self, rule, w):
        d = w["dataset"]
        docs = sum(self.sizes.split(d, s).docs for s in ("train", "test"))
        text = sum(self.sizes.split(d, s).text_bytes for s in ("train", "test"))
        return Cost(disk=0.5 * text, memory=LIGHT_MEMORY + 20 * text).add("dataset_docs", docs)

    def _tokens(self, rule, w):
        n = self.sizes.tokens(w["model"], w["dataset"], w["split"])
        return Cost(tokens=n, disk=2.5 * n, memory=MODEL_MEMORY + 300 * n).add("tokenize_tokens", n)

    def _init_model(self, rule, w):
        return Cost(disk=self.sizes.shape(w["model"]).params * 4, memory=MODEL_MEMORY).add("init_model_s", 1)

    def _pretrain(self, rule, w):
        m = w["model"]
        s = self.study["models"][m]["scratch"]
        corpus = s["corpus"]
        n = self.sizes.tokens(m, corpus, "train") * s["epochs"]
        steps = s["epochs"] * -(-self.sizes.split(corpus, "train").docs // s["batch_size"])
        cost = Cost(tokens=n, disk=(s["snapshots"] + 2) * self.sizes.shape(m).params * 4)
        cost.memory = self._model_memory(m, corpus, s["batch_size"], train=True)
        self._forward(cost, m, corpus, n, head=True, train=True)
        return cost.add("train_steps", steps * self.sizes.shape(m).n_layers)

    def _finetune(self, rule, w):
        m, d = w["model"], w["dataset"]
        ft = self.study["models"][m]["finetune"]
        docs = self.sizes.split(d, "train").docs
        docs = docs if ft["max_train_docs"] is None else min(docs, ft["max_train_docs"])
        n = self.sizes.mean_tokens(m, d, "train") * docs * ft["epochs"]
        lm = w.get("kind") in ("causal_lm", "masked_lm")
        lora = lm and self.study["models"][m]["finetuned"].get("method") == "lora"
        cost = Cost(tokens=int(n), disk=self.sizes.shape(m).params * 4 + TOKENIZER_BYTES)
        cost.memory = self._model_memory(m, d, ft["batch_size"], train=True, lora=lora)
        self._forward(cost, m, d, n, head=lm, train=True, lora=lora)
        self._forward(cost, m, d, self.sizes.tokens(m, d, "test"), head=lm)  # the test split's evaluation
        cost.add("train_steps", ft["epochs"] * -(-docs // ft["batch_size"]) * self.sizes.shape(m).n_layers)
        return cost

    def _frozen_classifier(self, rule, w):
        m, d = w["model"], w["dataset"]
        ft = self.study["models"][m]["finetune"]
        n = self._docs_tokens(m, d, ft["max_train_docs"], "train") + self.sizes.tokens(m, d, "test")
        cost = Cost(tokens=int(n), disk=self.sizes.shape(m).params * 4 + TOKENIZER_BYTES)
        cost.memory = self._model_memory(m, d, ft["eval_batch_size"])
        return self._forward(cost, m, d, n).add("frozen_classifier_s", 1)

    def _extract(self, rule, w):
        m, d = w["model"], w["dataset"]
        n = self.sizes.tokens(m, d, w["split"])
        ex = self.study["extract"]
        sets = len(self.study["models"][m]["layers"]) * len(self.study["sites"])
        cost = Cost(tokens=n, disk=n * self.sizes.shape(m).d_model * sets * DTYPE_BYTES[ex["dtype"]])
        cost.memory = self._model_memory(m, d, ex["batch_size"])
        return self._forward(cost, m, d, n).add("model_loads", 1)

    def _similarity(self, rule, w):
        m, d = w["model"], w["dataset"]
        n = self._test_tokens(m, d, self.study["similarity"]["max_tokens"])
        cost = Cost(tokens=n, disk=30e3, memory=self._model_memory(m, d, 32))
        return self._forward(cost, m, d, 2 * n).add("model_loads", 2)

    def _lm_compare(self, rule, w):
        m, d = w["model"], w["dataset"]
        n = self._docs_tokens(m, d, self.study["lm_compare"]["max_docs"])
        cost = Cost(tokens=int(n), disk=200e3, memory=self._model_memory(m, d, 16))
        return self._forward(cost, m, d, 2 * n, head=True).add("model_loads", 2)

    def _heads(self, rule, w):
        """Every head ablated in each mode: the blocks from its own on re-run (half the depth on average)."""
        m, d = w["model"], w["dataset"]
        h = self.study["heads"]
        s = self.sizes.shape(m)
        n = self._docs_tokens(m, d, h["max_docs"])
        ablations = s.n_layers * s.n_heads * len(h["modes"])
        cost = Cost(tokens=int(n), disk=2e6, memory=self._model_memory(m, d, h["batch_size"]))
        return self._forward(cost, m, d, n * (1 + ablations / 2)).add("model_loads", 1)

    def _sae(self, model: str, recipe: dict, cost: Cost) -> Cost:
        d_in = self.sizes.shape(model).d_model
        d_sae = self._d_sae(recipe, d_in)
        cost.tokens = recipe["train_tokens"]
        cost.disk = self._sae_bytes(d_in, d_sae) + 10e3
        cost.memory = BASE_MEMORY + self._sae_bytes(d_in, d_sae) * 4 + recipe["batch_size"] * d_sae * 4 * 6
        cost.add("sae_train", recipe["train_tokens"] * d_in * d_sae)
        return cost.add("sae_steps", -(-recipe["train_tokens"] // recipe["batch_size"])).add("sae_jobs", 1)

    def _train_sae(self, rule, w):
        return self._sae(w["model"], self.study["saes"][w["sae"]], Cost())

    _train_sae_seed = _train_sae

    def _encode(self, cost: Cost, model: str, d_sae: int, tokens: float, passes: float = 1) -> Cost:
        return cost.add("sae_encode", passes * tokens * self.sizes.shape(model).d_model * d_sae)

    def _evaluate_sae(self, rule, w):
        m, d = w["model"], w["dataset"]
        ev = self.study["sae_eval"]
        d_sae = self._d_sae(self.study["saes"][w["sae"]], self.sizes.shape(m).d_model)
        n = self._test_tokens(m, d, ev["max_tokens"])
        cost = self._encode(Cost(tokens=n, disk=5e3, memory=self._model_memory(m, d, 32)), m, d_sae, n)
        return self._task_loss(cost, m, d, 1)

    def _task_loss(self, cost: Cost, m: str, d: str, sides: int) -> Cost:
        """Each side's model loaded, its task loss clean, spliced and zero-ablated on sae_eval.max_docs."""
        self._forward(cost, m, d, 3 * sides * self._docs_tokens(m, d, self.study["sae_eval"]["max_docs"]))
        return cost.add("model_loads", sides).add("sae_jobs", 1)

    def _features(self, rule, w):
        m, d = w["model"], w["dataset"]
        d_sae = self._d_sae(self.study["saes"][w["sae"]], self.sizes.shape(m).d_model)
        n = self._test_tokens(m, d, self.study["features"]["max_tokens"])
        disk = self._examples(d_sae) * FEATURE_EXAMPLE_BYTES + d_sae * FEATURE_ROW_BYTES + SAE_PLOTS
        cost = Cost(tokens=n, disk=disk, memory=BASE_MEMORY + n * 40 * 4)
        return self._encode(cost, m, d_sae, n, 1.2).add("sae_jobs", 1)

    def _diff(self, rule, w):
        """Both SAEs (and the seed twin) encode both variants' test tokens; the transfer's task loss."""
        m, d = w["model"], w["dataset"]
        d_sae = self._d_sae(self.study["saes"][w["sae"]], self.sizes.shape(m).d_model)
        n = self._test_tokens(m, d, self.study["diff"]["max_tokens"])
        cost = self._encode(Cost(tokens=n, disk=60e3, memory=self._model_memory(m, d, 32)), m, d_sae, n, 6)
        self._forward(cost, m, d, 8 * self._docs_tokens(m, d, self.study["sae_eval"]["max_docs"]))
        return cost.add("model_loads", 2).add("sae_jobs", 1)

    def _stagewise(self, rule, w):
        m, d = w["model"], w["dataset"]
        sw, recipe = self.study["stagewise"], self.study["saes"][w["sae"]]
        d_in = self.sizes.shape(m).d_model
        d_sae = self._d_sae(recipe, d_in)
        n = self._test_tokens(m, d, sw["max_tokens"])
        cost = Cost(tokens=n, disk=2 * self._sae_bytes(d_in, d_sae) + 60e3, memory=BASE_MEMORY + n * 40 * 4)
        cost.add("sae_train", 2 * sw["steps"] * recipe["batch_size"] * d_in * d_sae)
        cost.add("sae_steps", 2 * sw["steps"])
        return self._encode(cost, m, d_sae, n, 2).add("sae_jobs", 1)

    def _crosscoder(self, rule, w):
        m, d = w["model"], w["dataset"]
        recipe = self.study["crosscoders"][w["crosscoder"]]
        d_in = self.sizes.shape(m).d_model
        d_sae = self._d_sae(recipe, d_in)
        n = self._test_tokens(m, d, self.study["crosscoder"]["max_tokens"])
        disk = self._sae_bytes(d_in, d_sae, 2) + 2 * self._examples(d_sae) * FEATURE_EXAMPLE_BYTES + 120e3
        cost = Cost(tokens=recipe["train_tokens"], disk=disk)
        cost.memory = BASE_MEMORY + self._sae_bytes(d_in, d_sae, 2) * 4 + recipe["batch_size"] * d_sae * 4 * 6
        cost.add("crosscoder_train", recipe["train_tokens"] * 2 * d_in * d_sae)
        cost.add("sae_steps", -(-recipe["train_tokens"] // recipe["batch_size"]))
        return self._task_loss(self._encode(cost, m, d_sae, n, 2 * 1.2), m, d, 2)

    def _probe(self, rule, w):
        """Each split's tokens pooled raw and through every SAE at the layer (encoded), then the
        cross-validated fits on the pooled documents (two poolings, raw and per SAE) and the token probes."""
        m, d = w["model"], w["dataset"]
        docs = sum(self.sizes.split(d, s).docs for s in ("train", "test"))
        tokens = sum(self.sizes.tokens(m, d, s) for s in ("train", "test"))
        d_model = self.sizes.shape(m).d_model
        widths = [self._d_sae(self.study["saes"][sae], d_model) for sae in self._layer_saes(w)]
        p = self.study["probe"]
        fits = len(p["Cs"]) * p["folds"] + len(p["ks"])
        cost = Cost(tokens=tokens, disk=60e3, memory=BASE_MEMORY + 8 * docs * (d_model + sum(widths)) * 4)
        for width in widths:
            self._encode(cost, m, width, tokens)
        return cost.add("probe_fits", fits * docs * d_model * (1 + len(widths))).add("sae_jobs", 1)

    def _layer_saes(self, w: dict) -> list[str]:
        return list(self.plan.layer_saes(w["model"], w["variant"], w["dataset"], w["site"], int(w["layer"])))

    def _methods(self, rule, w):
        """The SAE's features against each crosscoder's latents at the layer: a d_sae x d_cc cosine matrix."""
        m, d = w["model"], w["dataset"]
        d_model = self.sizes.shape(m).d_model
        d_sae = self._d_sae(self.study["saes"][w["sae"]], d_model)
        ccs = self.plan.layer_crosscoders(m, d, w["site"], int(w["layer"]))
        widths = [self._d_sae(self.study["crosscoders"][cc], d_model) for cc in ccs]
        cost = Cost(disk=20e3, memory=BASE_MEMORY + sum(4 * d_sae * c for c in widths))
        return cost.add("sae_encode", sum(d_sae * c * d_model for c in widths)).add("methods_s", 1)

    def _kmeans(self, rule, w):
        m, d = w["model"], w["dataset"]
        docs = self.sizes.split(d, "test").docs
        layers = len(self.study["models"][m]["layers"]) * len(self.study["sites"])
        return Cost(disk=200e3).add("kmeans_fits", 2 * layers * docs * self.sizes.shape(m).d_model).add("sae_jobs", 1)

    def _emergence(self, rule, w):
        """Each snapshot's forward over the sampled documents, then the probes of every factor."""
        m, d = w["model"], w["dataset"]
        s = self.study["models"][m]["scratch"]
        snaps = s["snapshots"] + 2
        e = self.study["emergence"]
        docs = self._docs_tokens(m, d, e["max_train_docs"], "train") + self._docs_tokens(m, d, e["max_test_docs"])
        layers = len(self.study["models"][m]["layers"])
        cost = Cost(tokens=int(docs), disk=400e3, memory=self._model_memory(m, d, 64))
        self._forward(cost, m, d, snaps * docs)
        return cost.add("emergence_probes", snaps * layers).add("model_loads", snaps)

    def _report(self, rule, w):
        """The page and its feature data: every SAE's and crosscoder's features with their examples."""
        m, d = w["model"], w["dataset"]
        d_in = self.sizes.shape(m).d_model
        recipes = [*self.study["saes"].values(), *(self.study.get("crosscoders") or {}).values()]
        widths = [2 * self._d_sae(r, d_in) for r in recipes for _ in self._scope(r, m, d)]  # both variants
        f = self.study["features"]
        per_latent = (f["n_top"] + f["n_quantiles"] * f["per_quantile"]) * (2 * f["window"] + 1) * REPORT_EXAMPLE_BYTES
        disk = sum(widths) * per_latent + 1.5e6
        memory = LIGHT_MEMORY + 3 * max(widths, default=0) * per_latent  # one SAE's feature data at a time
        return Cost(disk=disk, memory=memory).add("report_s", 1).add("report_bytes", disk)

    def _scope(self, section: dict, model: str, dataset: str) -> list:
        return self.plan.scope(section, model, dataset)


# bytes the small jobs write (default study, 2026-12-07)
SMALL_DISK = {"diff_summary": 150e3, "probe_summary": 100e3, "heads_summary": 700e3, "methods": 20e3,
              "report_index": 20e3, "ground_truth": 20e3}  # fmt: skip
