#include "distill/on_policy.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "distill/data.h"
#include "distill/endpoint.h"
#include "distill/generation.h"
#include "model/sampler.h"

namespace retort {
namespace {

uint64_t Mix64(uint64_t x) { return SplitMix64(x); }

}  // namespace

absl::StatusOr<std::unique_ptr<OnPolicySampler>> OnPolicySampler::Create(
    const OnPolicyOptions& options, const Tokenizer& tokenizer, const ChatTemplate* chat_template,
    int64_t max_context, int rank, int world_size) {
  if (options.prompts.empty()) return absl::InvalidArgumentError("on-policy: no --prompts file");
  if (options.prompts_per_batch < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--prompts-per-batch must be >= 1, got ", options.prompts_per_batch));
  }
  if (options.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max-new-tokens must be >= 1, got ", options.max_new_tokens));
  }
  if (!(options.lambda >= 0 && options.lambda <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lambda must be in [0, 1], got ", options.lambda));
  }
  SamplerOptions sampling;
  sampling.temperature = options.temperature;
  sampling.top_p = options.top_p;
  RETURN_IF_ERROR(ValidateSamplerOptions(sampling));
  if (chat_template == nullptr) {
    return absl::FailedPreconditionError(
        "on-policy distillation renders the prompts with the student's chat template, and the "
        "student has none (tokenizer_config.json chat_template)");
  }
  std::unique_ptr<OnPolicySampler> s(new OnPolicySampler(options, tokenizer, rank, world_size));
  s->max_context_ = max_context;
  ASSIGN_OR_RETURN(s->prompts_, ReadTracePrompts(options.prompts));
  if (s->prompts_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(options.prompts, ": no prompts"));
  }
  for (const TracePrompt& p : s->prompts_) {
    absl::StatusOr<RenderedPrompt> r =
        RenderTracePrompt(*chat_template, tokenizer, p.messages, options.think);
    if (!r.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.prompts, ":", p.line, ": ", r.status().message()));
    }
    if (static_cast<int64_t>(r->ids.size()) + 1 > max_context) {
      return absl::InvalidArgumentError(absl::StrCat(options.prompts, ":", p.line,
                                                     ": the prompt has ", r->ids.size(),
                                                     " tokens; the context is ", max_context));
    }
    s->rendered_.push_back(*std::move(r));
  }
  if (!options.verifier.empty()) {
    ASSIGN_OR_RETURN(s->verifier_, MakeVerifier(options.verifier));
  }
  return s;
}

bool OnPolicySampler::IsOnPolicy(int64_t step, int64_t micro, int64_t grad_accum) const {
  if (options_.lambda >= 1) return true;
  if (options_.lambda <= 0) return false;
  const uint64_t g = static_cast<uint64_t>(step * grad_accum + micro);
  Xoshiro256 rng(Mix64(options_.seed ^ Mix64(g + 0x6f6e)));
  return rng.Uniform() < options_.lambda;
}

int64_t OnPolicySampler::FirstSampleOfStep(int64_t step, int64_t grad_accum) const {
  return step * grad_accum * world_size_ * options_.prompts_per_batch;
}

int64_t OnPolicySampler::PromptOf(int64_t i) {
  const int64_t n = num_prompts();
  const int64_t epoch = i / n;
  if (epoch != perm_epoch_) {
    perm_ = EpochPermutation(static_cast<uint64_t>(n), options_.seed, static_cast<uint64_t>(epoch));
    perm_epoch_ = epoch;
  }
  return perm_[static_cast<size_t>(i % n)];
}

uint64_t OnPolicySampler::ContentHash() const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t p = 0; p < prompts_.size(); ++p) {
    const std::string& id = prompts_[p].id;
    for (char c : id) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    for (int32_t t : rendered_[p].ids) h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
  }
  return h;
}

absl::Status OnPolicySampler::Sample(const Transformer& student, int64_t step, int64_t micro,
                                     int64_t grad_accum, PackedBatch* batch, OnPolicyStats* stats) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t B = options_.prompts_per_batch;
  const int64_t g = step * grad_accum + micro;
  const int64_t first = (g * world_size_ + rank_) * B;
  std::vector<GenerationRequest> requests(static_cast<size_t>(B));
  std::vector<int64_t> prompt_of(static_cast<size_t>(B));
  for (int64_t j = 0; j < B; ++j) {
    const int64_t p = PromptOf(first + j);
    prompt_of[j] = p;
    GenerationRequest& r = requests[j];
    r.id = prompts_[p].id;
    r.prompt = rendered_[p].ids;
    r.sampling.temperature = options_.temperature;
    r.sampling.top_p = options_.top_p;
    r.sampling.seed = TraceSampleSeed(options_.seed, prompts_[p].id, first + j);
    r.max_new_tokens = options_.max_new_tokens;
  }
  GeneratorOptions gopt;
  gopt.max_batch = B;
  gopt.max_context = max_context_;
  BatchGenerator generator(student, gopt);
  std::vector<GenerationResult> results = generator.Generate(std::move(requests));

  // One row per sample: prompt + completion, padded to the longest.
  int64_t seq_len = 2;
  for (int64_t j = 0; j < B; ++j) {
    if (!results[j].status.ok()) {
      return absl::InternalError(absl::StrCat("on-policy sampling of prompt \"", results[j].id,
                                              "\": ", results[j].status.message()));
    }
    seq_len = std::max<int64_t>(seq_len, static_cast<int64_t>(rendered_[prompt_of[j]].ids.size() +
                                                              results[j].tokens.size()));
  }
  const int32_t pad = tokenizer_.eos_id() >= 0 ? tokenizer_.eos_id() : 0;
  *batch = PackedBatch();
  batch->seq_len = seq_len;
  batch->rows = B;
  const size_t n = static_cast<size_t>(seq_len * B);
  batch->tokens.assign(n, pad);
  batch->positions.assign(n, 0);
  batch->doc_start.assign(n, 0);
  batch->targets.assign(n, -1);
  std::vector<int64_t> prompt_lengths(B), lengths(B);
  for (int64_t j = 0; j < B; ++j) {
    const std::vector<int32_t>& prompt = rendered_[prompt_of[j]].ids;
    const GenerationResult& res = results[j];
    const int64_t row = j * seq_len;
    const int64_t np = static_cast<int64_t>(prompt.size());
    const int64_t len = np + static_cast<int64_t>(res.tokens.size());
    prompt_lengths[j] = np;
    lengths[j] = len;
    for (int64_t i = 0; i < seq_len; ++i) {
      const int64_t at = row + i;
      if (i < len) {
        batch->tokens[at] = i < np ? prompt[i] : res.tokens[i - np];
        batch->positions[at] = static_cast<int32_t>(i);
        batch->doc_start[at] = static_cast<int32_t>(row);
      } else {  // padding: a document of its own
        batch->positions[at] = static_cast<int32_t>(i - len);
        batch->doc_start[at] = static_cast<int32_t>(row + len);
      }
    }
    for (int64_t i = np - 1; i + 1 < len; ++i) {
      batch->targets[row + i] = res.tokens[i + 1 - np];
      ++batch->num_targets;
    }
    stats->samples += 1;
    stats->completion_tokens += static_cast<double>(res.tokens.size());
    stats->stopped += res.finish_reason == "stop";
    stats->truncated += res.finish_reason == "length";
    const TracePrompt& p = prompts_[prompt_of[j]];
    if (verifier_ != nullptr && p.answer) {
      const std::string text = tokenizer_.Decode(res.tokens, /*skip_special_tokens=*/true);
      const ReasoningSplitter::Delta parts = ReasoningSplitter::Split(
          text, ReasoningSplitter::Mode::kAuto, rendered_[prompt_of[j]].starts_in_reasoning);
      absl::StatusOr<VerifyResult> v = verifier_->Verify(parts.content, *p.answer);
      stats->verified += 1;
      stats->correct += v.ok() && v->correct;
    }
  }
  stats->batches += 1;
  const auto t1 = std::chrono::steady_clock::now();
  stats->generate_s += std::chrono::duration<double>(t1 - t0).count();
  if (endpoint_ != nullptr) {
    RETURN_IF_ERROR(ScoreWithEndpoint(prompt_lengths, lengths, batch));
    stats->teacher_s +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
  }
  return absl::OkStatus();
}

absl::Status OnPolicySampler::ScoreWithEndpoint(const std::vector<int64_t>& prompt_lengths,
                                                const std::vector<int64_t>& lengths,
                                                PackedBatch* batch) {
  const int64_t rows = batch->rows, seq_len = batch->seq_len, n = rows * seq_len;
  const int32_t K = endpoint_top_k_;
  std::vector<std::future<absl::StatusOr<TokenScores>>> pending;
  for (int64_t j = 0; j < rows; ++j) {
    const auto begin = batch->tokens.begin() + j * seq_len;
    pending.push_back(endpoint_->ScoreTokensAsync(std::vector<int32_t>(begin, begin + lengths[j]),
                                                  prompt_lengths[j], K));
  }
  if (K == 0) {
    batch->teacher_token_logprobs.assign(static_cast<size_t>(n), 0.f);
  } else {
    batch->top_k = K;
    batch->topk_ids.assign(static_cast<size_t>(n * K), -1);
    batch->topk_logprobs.assign(static_cast<size_t>(n * K), 0.f);
    batch->has_teacher.assign(static_cast<size_t>(n), 0);
  }
  for (int64_t j = 0; j < rows; ++j) {
    absl::StatusOr<TokenScores> scores = pending[j].get();
    if (!scores.ok()) return scores.status();
    // Position t (its token given the ones before) is row t - 1's target.
    for (int64_t t = prompt_lengths[j]; t < lengths[j]; ++t) {
      const int64_t at = j * seq_len + t - 1;
      const int64_t s = t - prompt_lengths[j];
      if (K == 0) {
        batch->teacher_token_logprobs[at] = scores->logprobs[s];
        continue;
      }
      int32_t kept = 0;
      for (int32_t k = 0; k < scores->top_k && kept < K; ++k) {
        const int32_t id = scores->topk_ids[s * scores->top_k + k];
        if (id < 0 || id >= vocab_) continue;
        batch->topk_ids[at * K + kept] = id;
        batch->topk_logprobs[at * K + kept] = scores->topk_logprobs[s * scores->top_k + k];
        ++kept;
      }
      batch->has_teacher[at] = 1;
      ++batch->num_teacher_targets;
    }
  }
  return absl::OkStatus();
}

}  // namespace retort
