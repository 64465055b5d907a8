"""A transformers causal LM (and optionally a PEFT adapter merged into it) as the stateful OpenVINO IR
that `openvino_genai.ContinuousBatchingPipeline` serves, made in this process and cached on disk.

optimum-intel does this export too, but it caps transformers below the version we run and drags in
another torch (see MEASURED.md), so the few steps it takes are done here: trace the model with its
KV cache as flat inputs and outputs, gather the cache by `beam_idx`, make the cache model state.
The pipeline then rewrites the graph to paged attention itself. Exported once per model (≈ 12 s for
the 135M model on 2 cores), reused while the weights and the adapter are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EXPORT_VERSION = 2  # bump when the graph this module builds changes
_COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "chat_template.jinja")


def fingerprint(folder: Path, adapter: Path | None) -> str:
    """What the IR depends on: the model folder's files (name, size, mtime), the adapter's own files
    (PEFT's `adapter_*`; not what lives beside them, such as the tool router refitted without a new
    adapter), the export code."""
    parts: list[object] = [EXPORT_VERSION]
    for source, counts in ((folder, lambda name: True), (adapter, lambda name: name.startswith("adapter_"))):
        if source is None:
            continue
        for path in sorted(Path(source).iterdir()):
            if path.is_file() and counts(path.name):
                stat = path.stat()
                parts.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def exported(folder: Path, cache_dir: Path, adapter: Path | None = None) -> Path:
    """The IR folder for `folder` (+ `adapter`), exporting it first when the cache has none."""
    key = fingerprint(Path(folder), Path(adapter) if adapter else None)
    target = Path(cache_dir) / f"{Path(folder).name}-{key}"
    if (target / "openvino_model.xml").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        export(Path(folder), work, adapter=Path(adapter) if adapter else None)
        if target.exists():  # another process finished first
            shutil.rmtree(work)
        else:
            work.rename(target)  # whole or not at all: a killed export leaves no half IR behind
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def export(folder: Path, out: Path, adapter: Path | None = None) -> None:
    import numpy as np
    import openvino as ov
    import torch
    from openvino import opset13
    from openvino._offline_transformations import apply_make_stateful_transformation
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa")
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    config = model.config
    layers = config.num_hidden_layers
    heads = config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class FlatCache(torch.nn.Module):
        """forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present), the signature the
        pipeline's paged-attention rewrite looks for."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=config)
            for index, layer in enumerate(cache.layers):
                # Filled directly: DynamicLayer.update's lazy empty tensor does not trace.
                layer.dtype, layer.device = past[2 * index].dtype, past[2 * index].device
                layer.keys, layer.values, layer.is_initialized = past[2 * index], past[2 * index + 1], True
            # No attention_mask: paged attention masks causally itself, and the traced mask subgraph
            # would leave a dangling parameter once the pipeline rewrites attention.
            out = self.inner(input_ids=input_ids, position_ids=position_ids, past_key_values=cache, use_cache=True)
            present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (out.logits, *present)

    past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    cached, new = 3, 2
    example = (torch.ones(1, new, dtype=torch.long), torch.ones(1, cached + new, dtype=torch.long),
               torch.arange(cached, cached + new).unsqueeze(0),
               *[torch.zeros(1, heads, cached, head_dim) for _ in past_names])
    shapes = [ov.PartialShape([-1, -1])] * 3 + [ov.PartialShape([-1, heads, -1, head_dim])] * len(past_names)
    with torch.no_grad():
        graph = ov.convert_model(FlatCache(model), example_input=example, input=shapes)
    for port, name in zip(graph.inputs, ["input_ids", "attention_mask", "position_ids", *past_names], strict=True):
        port.get_tensor().set_names({name})
    for index, port in enumerate(graph.outputs):
        port.get_tensor().set_names({"logits"} if index == 0 else {"present." + past_names[index - 1].split(".", 1)[1]})

    beam_idx = opset13.parameter(name="beam_idx", dtype=ov.Type.i32, shape=ov.PartialShape([-1]))
    beam_idx.output(0).get_tensor().add_names({"beam_idx"})
    graph.add_parameters([beam_idx])
    for name in past_names:
        port = graph.input(name)
        readers = port.get_target_inputs()
        gathered = opset13.gather(port, beam_idx, opset13.constant(0))
        for reader in readers:
            reader.replace_source_output(gathered.output(0))
    graph.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(graph, {name: "present." + name.split(".", 1)[1] for name in past_names})
    batch = opset13.gather(opset13.shape_of(graph.input("input_ids"), output_type="i64"),
                           opset13.constant([0]), opset13.constant(0))
    for op in graph.get_ops():
        if op.get_type_name() == "ReadValue":  # the cache starts as zeros of the batch's size
            dims = [d.min_length for d in op.get_output_partial_shape(0)]
            dims[0] = batch
            dims = [opset13.constant(np.array([d], dtype=np.int64)) if isinstance(d, int) else d for d in dims]
            zero = opset13.constant(0.0, dtype=op.get_output_element_type(0))
            op.set_arguments([opset13.broadcast(zero, opset13.concat(dims, axis=0))])
    graph.validate_nodes_and_infer_types()
    # Without it the CPU plugin keeps the KV cache in u8, and greedy output drifts from transformers'.
    graph.set_rt_info("f16", ["runtime_options", "KV_CACHE_PRECISION"])
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(graph, out / "openvino_model.xml", compress_to_fp16=True)
    for name in _COPIED:
        if (folder / name).is_file():
            shutil.copy(folder / name, out / name)
    # The pipeline reads and writes token ids here, but its structured output needs the vocabulary.
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    tokenizer, detokenizer = convert_tokenizer(AutoTokenizer.from_pretrained(folder), with_detokenizer=True)
    ov.save_model(tokenizer, out / "openvino_tokenizer.xml")
    ov.save_model(detokenizer, out / "openvino_detokenizer.xml")
    log.info("exported %s%s to OpenVINO IR in %s", folder, f" + {adapter}" if adapter else "", out)
