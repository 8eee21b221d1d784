"""Formula, source and known limits of every exported signal, merged into `specs.SPECS`.

Kept apart from the spec rows so the table stays readable; `docs/signals.md` is generated from the
merged specs (`python -m phaselens.exporters.docs --write`). A test fails when a spec has no entry.
Plain data: no imports from the package.
"""

from __future__ import annotations

DISTSERVE = "DistServe (Zhong et al., OSDI'24, arXiv:2401.09670)"
SPLITWISE = "Splitwise (Patel et al., ISCA'24, arXiv:2311.18677)"
PAGED = "PagedAttention (Kwon et al., SOSP'23, arXiv:2309.06180)"
VLLM_METRICS = "vLLM docs/design/metrics.md and vllm/v1/metrics/loggers.py"
PROM_QUANTILE = "Prometheus histogram_quantile()"
NOT_QUANTILE = (
    "a gauge over a sliding window, not a summary: the summary-reserved label quantile would fail "
    "promtool check metrics"
)
LLMD_TOKEN = "llm-d guides/workload-autoscaling/keda-epp-token-aware"
LLMD_PD = "llm-d guides/pd-disaggregation; llm-d-inference-scheduler prefix-based-pd-decider"
DYNAMO_PLANNER = "NVIDIA Dynamo load planner (docs/architecture/load_planner.md), disagg_perf_tuning.md"
DYNAMO = "NVIDIA Dynamo 1.6.1 (frontend, KV router, dynamo.mocker), recorded by make e2e"
WINDOW = "Computed over the window (settings.window_seconds): a burst stays in it for one horizon."

SIGNAL_DOCS: dict[str, dict[str, str]] = {
    # autoscaling
    "phaselens_prefill_queue_depth": {
        "formula": "requests_waiting_by_reason{reason=\"capacity\"} when the engine splits the queue, else "
                   "requests_waiting (latest scrape)",
        "source": f"{VLLM_METRICS} (num_requests_waiting, _by_reason); {DYNAMO_PLANNER} (prefill on queue)",
        "limits": "Requests deferred for a remote KV transfer or a LoRA budget are excluded only on vLLM "
                  "builds with the by-reason split; a count of requests, not of tokens (see backlog).",
    },
    "phaselens_prefill_backlog_seconds": {
        "formula": "queue_depth x uncached prompt tokens per request / V_P; tokens per request = mean of "
                   "request_prefill_kv_computed_tokens, else mean prompt tokens x (1 - hit ratio); V_P = the "
                   "highest per-scrape rate of (prompt_tokens - prompt_tokens_cached) in the window. 0 when "
                   "nothing waits.",
        "source": f"{LLMD_TOKEN} (queued uncached tokens / V_P); Dynamo planner PR #8314 (hit-rate-aware "
                  "prefill load)",
        "limits": "V_P is the window's own peak (a pure function keeps no memory): an underestimate of the "
                  "true peak makes the backlog an overestimate; absent when requests wait but no prefill "
                  "happened in the window. The signal to scale a prefill pool on (sum over pods).",
    },
    "phaselens_prefill_saturation_ratio": {
        "formula": "A prefill target (role prefill), per group: basis=\"arrivals\" when requests waited at "
                   "every scrape of the window: arrivals / admitted, arrivals = finished (e2e histogram count) "
                   "+ growth of running + waiting, admitted = arrivals - growth of waiting (at least 1 "
                   "request); else basis=\"busy\": the share of the window's scrapes with a request running. "
                   "A Dynamo P/D frontend (target=\"pool\", role=\"prefill\"): in pods, each scrape with "
                   "the n prefill workers the router had then; basis=\"tokens\": mean over the window's scrapes "
                   "of n x min(1, prompt tokens the router has in flight on them / (n x max_num_batched_tokens)); "
                   "basis=\"arrivals\" when the router's prefill queue held requests at every scrape of the "
                   "window's last stretch, at least half the window long: mean n over that stretch x arrivals "
                   "(requests started) / dispatched (arrivals - queue growth, at least 1 request), both over "
                   "that stretch. Below n while a queue drains",
        "source": "Little's law; Dynamo KV router (a request waits in the router queue while every prefill "
                  "worker has --router-queue-threshold x max_num_batched_tokens in flight); the fleet lab's "
                  "P/D mix-shift trace (docs/fleet.md): a backlog under a load just above capacity builds too "
                  "slowly to scale on",
        "limits": "The busy and tokens bases are sampled at the scrape interval and not linear in load (they "
                  "err high under batching) and top out at 1 (the tokens basis may stay under it on a "
                  "saturated pool: the router admits whole prompts, 0.7-1.6 batches per worker in the "
                  "fleet lab); only the arrivals basis says by how "
                  "much demand exceeds capacity, and it is noisy over windows of a few dozen arrivals and "
                  "needs a queue held through the window (a prefill pod's own series) or through its last "
                  "half (the frontend's). Not linear in the pool's size either: in the fleet lab a load that "
                  "saturates 3 mocker prefill workers read about 2 busy workers (tokens basis 1.2-1.7) on 5, "
                  "so a pool far above its load is scaled down further than it can go. The router's arrivals count "
                  "every request as prefill demand. The prefill HPA's second input beside the backlog; the "
                  "recording rules use the frontend's pool series only where the pool's pods export none.",
    },
    "phaselens_decode_kv_utilization_ratio": {
        "formula": "kv_cache_usage (vLLM kv_cache_usage_perc / gpu_cache_usage_perc), else Dynamo "
                   "active_blocks / total_blocks (latest scrape). Never clamped: a usage outside 0..1, or "
                   "more active blocks than the pool, is no value (docs/hardening.md)",
        "source": f"{VLLM_METRICS}; {DYNAMO_PLANNER} (decode on KV utilization); {LLMD_TOKEN}",
        "limits": "A share of the pre-allocated pool, so it drops when the pool grows; cached prefix blocks "
                  "no request holds count as free. SGLang's token_usage is the fullest of its KV pools (full, "
                  "SWA, Mamba). A host/offload tier can keep it pinned near 1 without pressure: see "
                  "phaselens_decode_kv_pressure_ratio.",
    },
    "phaselens_decode_kv_pressure_ratio": {
        "formula": "basis=\"utilization\": the KV utilization (as phaselens_decode_kv_utilization_ratio), "
                   "unless every KV utilization sample of the window is >= 0.95 while a host/offload tier is "
                   "active and the preemption counter did not move; then basis=\"held_tokens\": KV held by "
                   "running requests / KV capacity (SGLang kv_used_tokens / max_total_num_tokens), else "
                   "basis=\"preemptions\": 1 if requests waited for KV blocks in the window (SGLang decode "
                   "prealloc queue, vLLM capacity-blocked waiting), else 0. Host tier: --kv-offload-tier, or "
                   "seen in the metrics (SGLang HiCache host tokens, TensorRT-LLM host pool / offload bytes, "
                   "vLLM offload bytes or cache_config_info kv_offloading_size / num_cpu_blocks)",
        "source": "llm-d workload-variant-autoscaler issue #927 (KV offloading pins kv_cache_usage_perc near "
                  "95-100 %: false saturation); SGLang metrics_collector.py (kv_used_tokens: slots locked by "
                  "running requests); a real Dynamo 1.6.1 mocker with --num-host-blocks "
                  "(tests/fixtures/dynamo-1.6.1-mocker-host-offload)",
        "limits": "The utilization basis is the decode autoscaler's signal whenever it is not pinned; the "
                  "preemptions basis is coarse (0 or 1). Needs a preemption counter: without one (TensorRT-LLM) "
                  "the pinned case is not claimed. The Dynamo mocker shows no host-tier metric: declare it "
                  "with --kv-offload-tier. It is the KV term of the phase imbalance (decode saturation), aggregated "
                  "and pool.",
    },
    "phaselens_decode_saturation_ratio": {
        "formula": "max(KV utilization, running / batch cap), clamped to 0..1; basis=\"seats\" when the "
                   "running / cap term is the larger, else basis=\"kv\". KV utilization as "
                   "phaselens_decode_kv_utilization_ratio, running = num_requests_running (latest scrape). "
                   "Batch cap, first found: the engine's max_num_seqs (vLLM cache_config_info, Dynamo model "
                   "card), --max-num-seqs, else the running count's plateau while requests waited "
                   "(docs/diagnosis.md). Without a cap it equals the KV utilization",
        "source": "vLLM scheduler (a sequence is admitted only while running < max_num_seqs and its KV "
                  "blocks fit); llm-d workload-variant-autoscaler saturation analyzer (a replica is "
                  "saturated by KV or by its queue); the fleet lab's decode-heavy trace (docs/fleet.md, "
                  "finding 9)",
        "limits": "A worker's own metrics rarely carry max_num_seqs (the Dynamo mocker worker does not; its "
                  "frontend's model card does): pass --max-num-seqs, else the cap is only known after a "
                  "plateau under a queue (at least 10 queued samples in the window). On GPUs with "
                  "max_num_seqs of 256 and more KV binds first and the two signals agree.",
    },
    # phases
    "phaselens_phase_prefill_time_share_ratio": {
        "formula": "sum(prefill_time) / (sum(prefill_time) + sum(decode_time)) over requests finished in the "
                   "window; pool: prefill pool's prefill time over it plus the decode pool's decode time; "
                   "Dynamo P/D pool: the prefill workers' generate time over it plus the decode workers' "
                   "request time (workers joined with the frontend by id)",
        "source": f"{VLLM_METRICS} (request_prefill_time_seconds, request_decode_time_seconds); {SPLITWISE}",
        "limits": "Request time, not GPU time: decode spans many steps, so the share is small even when "
                  "prefill is the bottleneck; use the imbalance ratio to decide. " + WINDOW,
    },
    "phaselens_phase_imbalance_ratio": {
        "formula": "L_P / L_D; s = 1 if preemptions in the window else the KV pressure "
                   "(phaselens_decode_kv_pressure_ratio: the KV utilization unless a host tier pins it); aggregated: "
                   "L_P = (mean prefill time + mean queue wait x (1 - s)) / TTFT budget, "
                   "L_D = max(mean ITL / ITL budget, s); pool: L_P = (mean prefill time + mean queue wait) "
                   "of the prefill pool / TTFT budget, L_D from the decode pool's ITL, KV utilization and "
                   "preemptions. Budgets = SLOs (0.5 s / 0.1 s when unset). Dynamo P/D pool (frontend + "
                   "workers joined by id): L_P = mean prefill-worker generate time (else the router's last "
                   "TTFT per prefill worker) / TTFT budget; L_D = max(frontend mean ITL / ITL budget, s, mean "
                   "decode-worker TTFT / TTFT budget): the decode worker's own TTFT is the wait for a decode "
                   "seat plus its first step, the decode pool's share of the user's TTFT.",
        "source": f"{DISTSERVE} (TTFT belongs to prefill, TPOT to decode; goodput is capped by the first SLO "
                  f"to bind); vLLM V1 scheduler (a waiting request is admitted only with free KV blocks); "
                  f"{DYNAMO_PLANNER}",
        "limits": "Means, not tails; splitting queue wait by KV utilization is an attribution "
                  "heuristic; needs requests finished in the window. " + WINDOW,
    },
    "phaselens_phase_bottleneck": {
        "formula": "phase=\"prefill\" is 1 when the imbalance ratio > 1, else phase=\"decode\" is 1",
        "source": "Derived from phaselens_phase_imbalance_ratio",
        "limits": "Names the relatively more loaded phase even at light load; recommendations also require "
                  "the phase's load to exceed bottleneck_min_load.",
    },
    # kv cache
    "phaselens_kv_prefix_cache_hit_ratio": {
        "formula": "increase(prefix_cache_hits) / increase(prefix_cache_queries) over the window (TensorRT-LLM: "
                   "reused / (reused + missed) blocks); else (Dynamo frontend) sum of the requests' usage "
                   "cached_tokens / sum of their input tokens (dynamo_frontend_cached_tokens / "
                   "input_sequence_tokens histogram sums); else the KV router's cached-prefix tokens on the "
                   "chosen worker / the tokens it routed, prefill or aggregated routing only; else (SGLang) "
                   "cached / prompt tokens; else the V0 / Dynamo / SGLang hit-rate gauge. Clamped to [0, 1] "
                   "(hits are a part of queries).",
        "source": f"{VLLM_METRICS} (rate(hits)/rate(queries)); vllm PR #46938 (windowed, not cumulative); "
                  f"{DYNAMO} (frontend cached_tokens = the OpenAI usage prompt_tokens_details.cached_tokens)",
        "limits": "Tokens on vLLM >= 0.9, blocks before (the ratio is the same); absent when no lookups "
                  "happened. On a P/D decode instance it is the local cache only (prompt KV arrives by "
                  "transfer).",
    },
    "phaselens_kv_preemptions_per_second": {
        "formula": "increase(num_preemptions) / window span (reset-aware)",
        "source": VLLM_METRICS,
        "limits": "A preemption means KV demand exceeded the pool; one request can be preempted many times. "
                  + WINDOW,
    },
    "phaselens_kv_evictions_per_second": {
        "formula": "count rate of kv_block_idle_before_evict_seconds (else kv_block_lifetime_seconds) / "
                   "kv_cache_metrics_sample when the sample rate is known",
        "source": f"{VLLM_METRICS} (--kv-cache-metrics residency histograms, vllm PR #27793)",
        "limits": "Only with --kv-cache-metrics. Without a known sample rate the sampled rate is exported "
                  "unscaled: a lower bound of the true rate (the sample rate is at most 1).",
    },
    "phaselens_kv_internal_fragmentation_ratio": {
        "formula": "min(running x (B - 1)/2 / (used_blocks x B), (B - 1)/B); used_blocks = usage x "
                   "(num_gpu_blocks - 1) or Dynamo active blocks; B = block_size",
        "source": f"{PAGED}: waste only in each sequence's last, partly filled block, uniform mod B "
                  "on average",
        "limits": "An estimate (no per-sequence lengths are exported): per sequence the waste lies in "
                  "[0, B - 1] slots, so the true ratio lies in [0, running x (B-1) / (used_blocks x B)]; "
                  "prefix-shared blocks make it an overestimate. Absent with nothing running.",
    },
    "phaselens_kv_headroom_tokens": {
        "formula": "(1 - KV utilization) x KV capacity in tokens (cache_config_info "
                   "kv_cache_size_tokens, else num_gpu_blocks x block_size)",
        "source": f"{VLLM_METRICS} (cache_config_info)",
        "limits": "Block-granular capacity; free blocks may still hold reusable prefix KV.",
    },
    # latency and goodput
    "phaselens_ttft_seconds": {
        "formula": "histogram_quantile(q, increase of ttft buckets over the window), q in 0.5/0.9/0.95/0.99; "
                   "label percentile = 100 q: \"50\", \"90\", \"95\", \"99\" (" + NOT_QUANTILE + ")",
        "source": f"{PROM_QUANTILE}; {VLLM_METRICS} (time_to_first_token_seconds)",
        "limits": "Linear inside a bucket: error up to that bucket's width; a rank in +Inf reports the top "
                  "finite bound. On a P/D decode instance TTFT includes the KV transfer. " + WINDOW,
    },
    "phaselens_itl_seconds": {
        "formula": "histogram_quantile(q, increase of inter-token latency buckets over the window); label "
                   "percentile as for phaselens_ttft_seconds",
        "source": f"{PROM_QUANTILE}; {VLLM_METRICS} (inter_token_latency_seconds, was time_per_output_token)",
        "limits": "One observation per output step, so long requests weigh more; bucket-width error.",
    },
    "phaselens_queue_wait_seconds": {
        "formula": "histogram_quantile(q, increase of request_queue_time buckets over the window); label "
                   "percentile as for phaselens_ttft_seconds",
        "source": f"{PROM_QUANTILE}; {VLLM_METRICS} (request_queue_time_seconds)",
        "limits": "Recorded when a request finishes, so it lags the queue by the request's run time.",
    },
    "phaselens_e2e_latency_seconds": {
        "formula": "histogram_quantile(q, increase of e2e_request_latency buckets over the window); label "
                   "percentile as for phaselens_ttft_seconds",
        "source": f"{PROM_QUANTILE}; {VLLM_METRICS}",
        "limits": "Bucket-width error (coarse buckets above 1 s).",
    },
    "phaselens_slo_attainment_ratio": {
        "formula": "slo=ttft / itl: share of the window's observations <= SLO (lower = upper when the "
                   "SLO is a bucket bound, else the neighbouring bounds); itl uses per-request TPOT "
                   "(request_time_per_output_token) when present, else per-step ITL. slo=joint: Fréchet "
                   "bounds max(0, a_ttft + a_itl - 1) <= a <= min(a_ttft, a_itl); one SLO: that SLO's value.",
        "source": f"{DISTSERVE} (attainment of TTFT and TPOT SLOs); Fréchet-Hoeffding bounds; vLLM "
                  "benchmark_serving --goodput (a request is good when every SLO holds)",
        "limits": "Histograms give marginals only: the joint value is known only within its bounds; "
                  "set SLOs on bucket bounds (TTFT 0.1/0.25/0.5/0.75/1 s, ITL 0.025-0.2 s) for exact "
                  "marginals. Bounded in [0, 1].",
    },
    "phaselens_goodput_requests_per_second": {
        "formula": "joint attainment bound x rate of finished requests not aborted or failed",
        "source": f"{DISTSERVE} (goodput); vLLM benchmark_serving request_goodput",
        "limits": "A runtime rate, not DistServe's capacity (max rate at >= 90 % attainment); bounds as the "
                  "joint attainment.",
    },
    "phaselens_request_rate_per_second": {
        "formula": "increase(request_success summed over finished_reason) / span, else the e2e histogram's "
                   "count rate (Dynamo frontend: request duration), else Dynamo's request counter (a worker's "
                   "generate endpoint); never the KV router's counters, which count a P/D request twice",
        "source": VLLM_METRICS,
        "limits": "Counts every finish reason including abort and error. " + WINDOW,
    },
    # nixl (analyzers/nixl.py)
    "phaselens_nixl_transfer_seconds": {
        "formula": "quantile of KV transfer time over the window, one series per source (`source` label): vLLM "
                   "nixl_xfer_time histogram, the engine's own per-request transfer histogram (SGLang "
                   "kv_transfer_latency_ms, TensorRT-LLM under Dynamo kv_transfer_latency_seconds: "
                   "sglang_metrics / trtllm_metrics / dynamo_metrics, on the target that records it, usually "
                   "prefill), NIXL telemetry ring (exact), or the KV Transfer log line's p90; "
                   "q in 0.5/0.9/0.99, label percentile = 100 q (\"50\", \"90\", \"99\")",
        "source": "vLLM kv_connector/v1/nixl stats.py; SGLang metrics_collector.py (kv_transfer_* histograms "
                  "since PR #19009); Dynamo docs/backends/trtllm/prometheus.md; NIXL telemetry (NIXL_TELEMETRY_DIR)",
        "limits": "vLLM pools observations across TP ranks (per-rank, not per request); the log source gives "
                  "an upper bound of p90 only; SGLang's figure runs from the transfer queue to done, so it "
                  "includes queueing (and before SGLang #23937 was fixed, decode time).",
    },
    "phaselens_nixl_transfer_bytes_per_second": {
        "formula": "bytes transferred in the window / window span",
        "source": "vLLM nixl_bytes_transferred; SGLang kv_transfer_total_mb (MiB); TensorRT-LLM kv_transfer_bytes; "
                  "NIXL agent exporter / telemetry rings",
        "limits": "Per-rank pooling as above; not fabric throughput.",
    },
    "phaselens_nixl_transfer_failure_ratio": {
        "formula": "failed transfers / (failed + successful transfers) in the window",
        "source": "vLLM nixl_num_failed_transfers; SGLang num_transfer_failed_reqs; NIXL telemetry",
        "limits": "Expired KV (prefill side) is counted separately by vLLM.",
    },
    "phaselens_nixl_ttft_share_ratio": {
        "formula": "sum(transfer time) / sum(decode-side TTFT) over the window, clamped to [0, 1]",
        "source": f"{SPLITWISE} (KV transfer is the cost of splitting); vLLM NIXL metrics",
        "limits": "Overlapping per-rank transfers overstate it; needs the decode TTFT histogram.",
    },
    # disaggregation
    "phaselens_disaggregation_score": {
        "formula": "mean(interference_avoided, prefill_heavy) x (1 - kv_transfer_ttft_share) x "
                   "(1 - kv_capacity_pressure), over the components that could be measured",
        "source": f"{DISTSERVE} (interference); TetriInfer arXiv:2401.11181 (mixed batches slow decode); "
                  f"{SPLITWISE} (transfer cost); {LLMD_PD} (ISL|OSL rule); {DYNAMO_PLANNER} (KV capacity)",
        "limits": "Our composite, not a published metric: weights are equal; pool only (target=\"pool\"); "
                  "needs at least one benefit component.",
    },
    "phaselens_disaggregation_component_ratio": {
        "formula": "interference_avoided = min(1, prefill concurrency per prefill instance) (Little's law, "
                   "Markov bound on busy share); prefill_heavy = clamp((r - 0.5)/0.4), "
                   "r = ISL_eff/(ISL_eff + OSL); kv_transfer_ttft_share as the NIXL signal; "
                   "kv_capacity_pressure = clamp((u - knee)/(1 - knee)), knee = utilization_knee. Dynamo P/D: "
                   "prefill concurrency from the prefill workers' generate time, ISL_eff = frontend input - "
                   "cached tokens per request, OSL from the frontend, u from the decode workers; no "
                   "transfer component (1.6.1 exports no measured KV-transfer time)",
        "source": f"{DISTSERVE}; {LLMD_PD} (10k|1k pays, 200|200 does not); {DYNAMO_PLANNER}",
        "limits": "Each in [0, 1]; benefit components: higher favours disaggregation, cost components: "
                  "higher argues against it.",
    },
    # queue intelligence (analyzers/queueing.py, breach.py)
    "phaselens_utilization_ratio": {
        "formula": "rho = arrival rate x mean service time / effective concurrency",
        "source": "Little's law; Erlang C (M/M/c); see docs/queueing.md",
        "limits": "Effective concurrency is learned from saturated scrapes; above 1 means overload.",
    },
    "phaselens_predicted_queue_wait_seconds": {
        "formula": "wait of a request arriving now by Little's law, Erlang C and Kingman (model label), "
                   "with a 10-90 % interval (bound label)",
        "source": "Little's law; Erlang C; Kingman / Allen-Cunneen G/G/c; see docs/queueing.md",
        "limits": "Continuous batching is not a fixed-rate server: first-order estimates.",
    },
    "phaselens_slo_breach_probability": {
        "formula": "calibrated probability that a request arriving now misses the TTFT SLO",
        "source": "Isotonic / logistic calibration, labelled online against the TTFT histogram",
        "limits": "Gated by the rolling calibration error.",
    },
    "phaselens_prediction_calibration_error": {
        "formula": "rolling expected calibration error of the published breach probability: "
                   "sum over 10 equal-width bins of |mean p - breach share| x the bin's share of requests",
        "source": "Guo et al. 2017 (ECE); labels per arriving request, see docs/queueing.md",
        "limits": "Needs labelled predictions; absent until enough are resolved.",
    },
    "phaselens_prediction_brier_score": {
        "formula": "rolling request-weighted mean of (p - y)^2 over the last labelled predictions of the "
                   "published breach probability (y the share of a tick's arrivals that missed the SLO)",
        "source": "Brier 1950; labels per arriving request, see docs/queueing.md",
        "limits": "Needs labelled predictions; absent until enough are resolved. Includes the "
                  "irreducible spread of outcomes: compare it with the breach share's p(1-p).",
    },
    # diagnosis (analyzers/diagnosis.py)
    "phaselens_diagnosis": {
        "formula": "1 for the cause the diagnosis holds now (first rule that holds, in the order of the "
                   "taxonomy, entered after diagnosis_enter_ticks ticks and left after diagnosis_exit_ticks), "
                   "0 for the other six; every series 0 when nothing binds",
        "source": "phaselens diagnosis rules, see docs/diagnosis.md",
        "limits": "Seven fixed label values (KV_TRANSFER, KV_CAPACITY, BATCH_SEAT_LIMIT, PREFILL_COMPUTE, "
                  "DECODE_COMPUTE, FRONTEND_OVERHEAD, DEMAND_ABOVE_CAPACITY); lags a change by the hysteresis.",
    },
    # gpu
    "phaselens_gpu_utilization_ratio": {
        "formula": "NVML utilization.gpu / 100",
        "source": "NVML nvmlUtilization_t",
        "limits": "Share of time any kernel ran: pinned near 1 with one request; not a scaling signal.",
    },
    "phaselens_gpu_memory_used_ratio": {
        "formula": "NVML memory used / total",
        "source": "NVML nvmlMemory_t",
        "limits": "Engines pre-allocate KV memory at start: says nothing about KV use.",
    },
    "phaselens_gpu_power_watts": {
        "formula": "NVML power usage / 1000",
        "source": "NVML nvmlDeviceGetPowerUsage",
        "limits": "Averaged by the driver over about a second.",
    },
    "phaselens_gpu_temperature_celsius": {
        "formula": "NVML GPU core temperature",
        "source": "NVML nvmlDeviceGetTemperature",
        "limits": "Core sensor only.",
    },
    "phaselens_gpu_health_ratio": {
        "formula": "product of thermal, throttling and ECC factors (analyzers/gpu.py)",
        "source": "NVML throttle reasons and ECC counters",
        "limits": "A heuristic score: 1 means nothing wrong is visible.",
    },
    # self
    "phaselens_target_up": {
        "formula": "1 if the last scrape succeeded and parsed, else 0",
        "source": "phaselens runtime",
        "limits": "-",
    },
    "phaselens_scrape_duration_seconds": {
        "formula": "wall time of the last scrape (monotonic clock)",
        "source": "phaselens runtime",
        "limits": "-",
    },
    "phaselens_parse_errors_total": {
        "formula": "count of malformed exposition lines skipped since start (a label value over 1 KiB, a "
                   "duplicated series included), plus the engine series rejected as impossible (a ratio "
                   "outside 0..1, an infinite or negative count, inconsistent histogram buckets)",
        "source": "phaselens parser and engine adapters (parsers/engines/validate.py, docs/hardening.md)",
        "limits": "Resets when the sidecar restarts; a series rejected in every scrape counts every scrape.",
    },
    "phaselens_tick_duration_seconds": {
        "formula": "CPU time of the last pipeline tick",
        "source": "phaselens runtime",
        "limits": "-",
    },
    "phaselens_signal_age_seconds": {
        "formula": "now - time of the target's last fresh scrape",
        "source": "phaselens runtime",
        "limits": "-",
    },
}

DYNAMO_COVERAGE: dict[str, str] = {
    # What a Dynamo 1.6.1 deployment gives for each signal, checked on a real frontend + mocker
    # (tests/fixtures/dynamo-1.6.1-mocker-*). "frontend" = a target scraping the frontend's /metrics.
    "phaselens_prefill_queue_depth": "frontend: requests in the preprocess/route/dispatch stages (includes "
    "requests being routed, not only queued); workers: the mocker's vllm:num_requests_waiting. A P/D "
    "prefill worker exports no queue at all: in P/D the prefill pool's queue is the frontend's KV-router "
    "queue (dynamo_frontend_router_queue_pending_requests{worker_type=\"prefill\"}, filled only with "
    "--router-queue-threshold), exported by the frontend's sidecar as target=\"pool\", role=\"prefill\" so "
    "the per-role recording rules add it to the prefill pool.",
    "phaselens_prefill_backlog_seconds": "workers: the queue's drain time (queue / requests finished per "
    "second; no prompt-token counter, so V_P is unknown); 0 when nothing waits. P/D prefill pool "
    "(frontend, target=\"pool\", role=\"prefill\"): the router's queued prefill requests x prefill workers "
    "the frontend routes to / the requests the router dispatched to the prefill pool per second (the "
    "frontend's arrivals minus the router queue's growth over the window; its finished requests per "
    "second only without dynamo_frontend_requests_started_total), one pod's seconds as the per-pod drain "
    "time; the prefill HPA's input.",
    "phaselens_prefill_saturation_ratio": "P/D prefill pool (frontend, target=\"pool\", role=\"prefill\"): "
    "the router's dynamo_frontend_worker_active_prefill_tokens over the model card's max_num_batched_tokens, "
    "and with --router-queue-threshold the router's queue against dynamo_frontend_requests_started_total. "
    "A mocker prefill worker's own sidecar has no running count, so no value of its own.",
    "phaselens_decode_kv_utilization_ratio": "workers: vllm:kv_cache_usage_perc (aggregated and P/D "
    "decode workers); a P/D prefill worker has none; the frontend only has per-worker active decode blocks "
    "(used by the pool analysis, not exported per target).",
    "phaselens_decode_kv_pressure_ratio": "workers: as the KV utilization (the mocker's host tier "
    "(--num-host-blocks) leaves no trace in its metrics and never pins usage, so pass --kv-offload-tier "
    "to read a pinned pool as no pressure).",
    "phaselens_decode_saturation_ratio": "workers: the KV utilization and vllm:num_requests_running; the "
    "mocker worker does not export max_num_seqs (the frontend's model card does), so pass --max-num-seqs "
    "or the seats term waits for a plateau under a queue.",
    "phaselens_phase_prefill_time_share_ratio": "P/D pool only: prefill workers' generate time over it plus "
    "the decode workers' request time (workers joined with the frontend by id). Cannot per target: the "
    "mocker has no prefill/decode time histograms.",
    "phaselens_phase_imbalance_ratio": "P/D pool only (frontend + joined workers, see the formula); an "
    "aggregated mocker has no prefill time, so no per-target imbalance.",
    "phaselens_phase_bottleneck": "as phaselens_phase_imbalance_ratio.",
    "phaselens_kv_prefix_cache_hit_ratio": "frontend: sum of the usage's cached_tokens over input tokens "
    "(dynamo_frontend_cached_tokens / input_sequence_tokens), else the KV router's cached-prefix tokens "
    "over the tokens it routed (prefill/aggregated routing only). Workers: cannot (the mocker exports no "
    "prefix counters).",
    "phaselens_kv_preemptions_per_second": "workers: vllm:num_preemptions_total.",
    "phaselens_kv_evictions_per_second": "cannot: no block residency histograms in 1.6.1.",
    "phaselens_kv_internal_fragmentation_ratio": "cannot on a worker (no block size on its port); the "
    "frontend has the block size but no running count.",
    "phaselens_kv_headroom_tokens": "cannot: a worker has usage but no pool size, the frontend the reverse.",
    "phaselens_ttft_seconds": "frontend: the user's TTFT (tokenization, routing, queueing included); "
    "workers: vllm:time_to_first_token (a P/D decode worker's is its own first token, not the user's).",
    "phaselens_itl_seconds": "frontend and workers (per step).",
    "phaselens_e2e_latency_seconds": "frontend: the user's request duration; workers: vllm:e2e_request_latency "
    "(a P/D prefill worker has none).",
    "phaselens_queue_wait_seconds": "cannot: the mocker has no queue-time histogram.",
    "phaselens_slo_attainment_ratio": "frontend: ttft, itl, joint (the user's); aggregated workers: their "
    "own; a P/D decode worker: itl only (its TTFT is not the user's).",
    "phaselens_goodput_requests_per_second": "frontend (the user's); aggregated workers; not on a P/D decode "
    "worker (no user TTFT there).",
    "phaselens_request_rate_per_second": "frontend: finished requests (duration histogram count), once per "
    "request in P/D; workers: vllm e2e count, a P/D prefill worker its generate-endpoint counter. The "
    "router's own request counters count a P/D request twice and are not used.",
    "phaselens_nixl_transfer_seconds": "cannot: the mocker simulates KV transfer (--kv-transfer-bandwidth) "
    "but exports no transfer metric; the router's kv_transfer_estimated_latency is an estimate.",
    "phaselens_nixl_transfer_bytes_per_second": "cannot (as phaselens_nixl_transfer_seconds).",
    "phaselens_nixl_transfer_failure_ratio": "cannot (as phaselens_nixl_transfer_seconds).",
    "phaselens_nixl_ttft_share_ratio": "cannot (as phaselens_nixl_transfer_seconds).",
    "phaselens_disaggregation_score": "P/D pool: interference_avoided, prefill_heavy and "
    "kv_capacity_pressure; kv_transfer_ttft_share cannot be measured (no transfer time).",
    "phaselens_disaggregation_component_ratio": "as phaselens_disaggregation_score.",
    "phaselens_utilization_ratio": "not seen in the e2e runs: no GPU reading and no effective concurrency "
    "the model accepts from the mocker's gauges.",
    "phaselens_predicted_queue_wait_seconds": "workers (running, waiting, TTFT, e2e); frontend: arrivals from "
    "dynamo_frontend_requests_started_total (counted as they arrive), running = inflight - queued "
    "(stage gauges), the user's TTFT and duration.",
    "phaselens_slo_breach_probability": "as phaselens_predicted_queue_wait_seconds.",
    "phaselens_prediction_calibration_error": "as phaselens_predicted_queue_wait_seconds, once predictions "
    "have outcomes.",
    "phaselens_prediction_brier_score": "as phaselens_prediction_calibration_error.",
    "phaselens_diagnosis": "workers: KV_CAPACITY, BATCH_SEAT_LIMIT (cap from the frontend's model card "
    "max_num_seqs), PREFILL_COMPUTE (queue with free seats and KV: no prefill histogram), DECODE_COMPUTE; "
    "P/D pool: KV_TRANSFER from the frontend's TTFT minus both workers' (labelled runs in docs/diagnosis.md).",
    "phaselens_gpu_utilization_ratio": "NVML, not Dynamo.",
    "phaselens_gpu_memory_used_ratio": "NVML, not Dynamo.",
    "phaselens_gpu_power_watts": "NVML, not Dynamo.",
    "phaselens_gpu_temperature_celsius": "NVML, not Dynamo.",
    "phaselens_gpu_health_ratio": "NVML, not Dynamo.",
    "phaselens_target_up": "every target.",
    "phaselens_scrape_duration_seconds": "every target.",
    "phaselens_parse_errors_total": "every target.",
    "phaselens_signal_age_seconds": "every target.",
    "phaselens_tick_duration_seconds": "the sidecar itself.",
}
"""Per signal, what a real Dynamo 1.6.1 (frontend + mocker workers) gives, or why it cannot."""
