#include "distill/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace retort {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// NaN sorts below everything, so it is never a top token.
inline float Key(float x) { return std::isnan(x) ? -std::numeric_limits<float>::infinity() : x; }

}  // namespace

double LogSumExp(const float* logits, int64_t vocab, float inv_temperature) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) max = std::max(max, Key(logits[i]) * inv_temperature);
  if (!std::isfinite(max)) return max;  // all -inf/NaN, or a +inf logit
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float l = Key(logits[i]) * inv_temperature;
    sum += std::exp(static_cast<double>(l) - max);
  }
  return max + std::log(sum);
}

void TopKIds(const float* logits, int64_t vocab, int32_t k, std::vector<int32_t>* ids) {
  const int64_t kk = std::clamp<int64_t>(k, 0, vocab);
  ids->clear();
  if (kk == 0) return;
  auto better = [logits](int32_t a, int32_t b) {
    const float la = Key(logits[a]), lb = Key(logits[b]);
    return la > lb || (la == lb && a < b);
  };
  // One pass keeping the best kk in a heap whose top is the worst of them:
  // most tokens are rejected by one comparison.
  ids->reserve(kk);
  for (int32_t i = 0; i < static_cast<int32_t>(kk); ++i) ids->push_back(i);
  std::make_heap(ids->begin(), ids->end(), better);
  for (int64_t i = kk; i < vocab; ++i) {
    const int32_t id = static_cast<int32_t>(i);
    if (!better(id, ids->front())) continue;
    std::pop_heap(ids->begin(), ids->end(), better);
    ids->back() = id;
    std::push_heap(ids->begin(), ids->end(), better);
  }
  std::sort_heap(ids->begin(), ids->end(), better);
}

struct BatchGenerator::Sequence {
  GenerationRequest request;
  int64_t index = 0;
  int64_t slot = 0;
  Sampler sampler;
  std::vector<int32_t> stop_ids;  // sorted
  size_t max_stop_chars = 0;
  std::vector<int32_t> history;  // prompt + completion (the repetition penalty's)
  int64_t prefilled = 0;         // prompt tokens in the cache
  int32_t pending = -1;          // sampled, not yet in the cache
  GenerationResult result;
  double submit_time = 0, start_time = 0;

  explicit Sequence(const SamplerOptions& options) : sampler(options) {}
  int64_t prompt_size() const { return static_cast<int64_t>(request.prompt.size()); }
  bool decoding() const { return prefilled == prompt_size(); }
};

BatchGenerator::BatchGenerator(const Transformer& model, GeneratorOptions options)
    : model_(model), options_(std::move(options)) {
  const ModelConfig& c = model_.config();
  options_.max_batch = std::max<int64_t>(1, options_.max_batch);
  options_.max_prefill_tokens_per_step = std::max<int64_t>(1, options_.max_prefill_tokens_per_step);
  max_context_ = c.max_position_embeddings;
  if (options_.max_context > 0) max_context_ = std::min(max_context_, options_.max_context);
  slots_.resize(options_.max_batch);
  for (int64_t i = 0; i < options_.max_batch; ++i) caches_.push_back(model_.NewCache(max_context_));
  logits_.resize(options_.max_batch * c.vocab_size);
}

BatchGenerator::~BatchGenerator() = default;

int64_t BatchGenerator::Submit(GenerationRequest request) {
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t index = next_index_++;
  queue_.push_back({std::move(request), index, Now()});
  cv_.notify_all();
  return index;
}

void BatchGenerator::Cancel(int64_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  if (index >= 0 && index < next_index_) cancelled_.insert(index);
}

void BatchGenerator::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

int64_t BatchGenerator::Pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size()) + running_;
}

bool BatchGenerator::HasWork() const { return Pending() > 0; }

absl::Status BatchGenerator::Check(const GenerationRequest& r) const {
  const int64_t vocab = model_.config().vocab_size;
  const std::string who = absl::StrCat("generation request '", r.id, "'");
  if (r.prompt.empty()) return absl::InvalidArgumentError(absl::StrCat(who, ": empty prompt"));
  for (size_t i = 0; i < r.prompt.size(); ++i) {
    if (r.prompt[i] < 0 || r.prompt[i] >= vocab) {
      return absl::OutOfRangeError(absl::StrCat(who, ": prompt token ", r.prompt[i], " at ", i,
                                                " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  if (static_cast<int64_t>(r.prompt.size()) >= max_context_) {
    return absl::OutOfRangeError(absl::StrCat(who, ": the prompt has ", r.prompt.size(),
                                              " tokens, the context holds ", max_context_,
                                              " (prompt + completion)"));
  }
  if (r.max_new_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": max_new_tokens is ", r.max_new_tokens, ", expected >= 1"));
  }
  if (r.top_logprobs < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": top_logprobs is ", r.top_logprobs, ", expected >= 0"));
  }
  if (!r.stop_strings.empty() && !options_.detokenize) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": stop strings need GeneratorOptions::detokenize"));
  }
  for (const std::string& s : r.stop_strings) {
    if (s.empty()) return absl::InvalidArgumentError(absl::StrCat(who, ": empty stop string"));
  }
  absl::Status s = ValidateSamplerOptions(r.sampling);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(who, ": ", s.message()));
  return absl::OkStatus();
}

void BatchGenerator::Admit() {
  std::vector<GenerationResult> rejected;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int64_t slot = 0; slot < options_.max_batch && !queue_.empty(); ++slot) {
      if (slots_[slot] != nullptr) continue;
      while (!queue_.empty()) {
        Queued q = std::move(queue_.front());
        queue_.pop_front();
        absl::Status status = Check(q.request);
        const bool cancelled = cancelled_.erase(q.index) > 0;
        if (!status.ok() || cancelled) {
          GenerationResult r;
          r.id = q.request.id;
          r.index = q.index;
          r.status = status;
          r.finish_reason = cancelled ? "cancelled" : "error";
          r.prompt_tokens = static_cast<int64_t>(q.request.prompt.size());
          r.queue_seconds = Now() - q.submit_time;
          rejected.push_back(std::move(r));
          continue;
        }
        auto s = std::make_unique<Sequence>(q.request.sampling);
        s->index = q.index;
        s->slot = slot;
        s->submit_time = q.submit_time;
        s->start_time = Now();
        s->stop_ids = q.request.stop_token_ids;
        if (!q.request.ignore_eos) {
          for (int64_t e : model_.config().eos_token_ids)
            s->stop_ids.push_back(static_cast<int32_t>(e));
        }
        std::sort(s->stop_ids.begin(), s->stop_ids.end());
        for (const std::string& str : q.request.stop_strings)
          s->max_stop_chars = std::max(s->max_stop_chars, str.size());
        s->history = q.request.prompt;
        s->result.id = q.request.id;
        s->result.index = q.index;
        s->result.prompt_tokens = static_cast<int64_t>(q.request.prompt.size());
        s->result.top_k = static_cast<int32_t>(
            std::min<int64_t>(q.request.top_logprobs, model_.config().vocab_size));
        s->result.queue_seconds = s->start_time - q.submit_time;
        s->request = std::move(q.request);
        caches_[slot].Clear();
        slots_[slot] = std::move(s);
        ++running_;
        break;
      }
    }
  }
  for (GenerationResult& r : rejected) {
    if (options_.on_finished) options_.on_finished(std::move(r));
  }
}

void BatchGenerator::Finish(Sequence& s, const std::string& reason, absl::Status status) {
  const int64_t slot = s.slot;
  GenerationResult result = std::move(s.result);
  result.status = std::move(status);
  result.finish_reason = reason;
  result.completion_tokens = static_cast<int64_t>(result.tokens.size());
  result.total_seconds = Now() - s.start_time;
  if (result.tokens.empty()) result.first_token_seconds = 0;
  caches_[slot].Clear();
  slots_[slot].reset();  // s is gone from here on
  {
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
    cancelled_.erase(result.index);
  }
  if (options_.on_finished) options_.on_finished(std::move(result));
}

bool BatchGenerator::Record(Sequence& s, const float* logits, int32_t tok) {
  const GenerationRequest& r = s.request;
  GenerationResult& res = s.result;
  const int64_t vocab = model_.config().vocab_size;
  const bool is_stop = std::binary_search(s.stop_ids.begin(), s.stop_ids.end(), tok);
  if (res.tokens.empty()) res.first_token_seconds = Now() - s.start_time;
  if (is_stop && !r.include_stop_token) {
    Finish(s, "stop");
    return true;
  }
  const float inv_t = options_.logprobs == LogprobSource::kTempered && r.sampling.temperature > 0
                          ? 1.f / r.sampling.temperature
                          : 1.f;
  const double lse = LogSumExp(logits, vocab, inv_t);
  auto logprob = [&](int32_t id) {
    return static_cast<float>(static_cast<double>(Key(logits[id]) * inv_t) - lse);
  };
  res.tokens.push_back(tok);
  res.logprobs.push_back(logprob(tok));
  if (res.top_k > 0) {
    TopKIds(logits, vocab, res.top_k, &topk_scratch_);
    for (int32_t id : topk_scratch_) {
      res.topk_ids.push_back(id);
      res.topk_logprobs.push_back(logprob(id));
    }
  }
  s.history.push_back(tok);
  const int64_t completion = static_cast<int64_t>(res.tokens.size());
  if (options_.on_token) {
    TokenEvent e{&res.id, s.index, completion - 1, tok, res.logprobs.back()};
    if (res.top_k > 0) {
      e.top_k = res.top_k;
      e.topk_ids = res.topk_ids.data() + (completion - 1) * res.top_k;
      e.topk_logprobs = res.topk_logprobs.data() + (completion - 1) * res.top_k;
    }
    options_.on_token(e);
  }
  if (is_stop) {
    Finish(s, "stop");
    return true;
  }
  if (!r.stop_strings.empty()) {
    // Each token decodes to at least one byte (special tokens aside), so the
    // last (longest stop string + 4) tokens hold any match the newest token
    // completed; earlier matches would have stopped an earlier step.
    const int64_t window = std::min<int64_t>(completion, s.max_stop_chars + 4);
    std::string tail =
        options_.detokenize(std::vector<int32_t>(res.tokens.end() - window, res.tokens.end()));
    for (const std::string& stop : r.stop_strings) {
      if (tail.find(stop) != std::string::npos) {
        res.stop_string = stop;
        Finish(s, "stop");
        return true;
      }
    }
  }
  if (completion >= r.max_new_tokens || s.prompt_size() + completion >= max_context_) {
    Finish(s, "length");
    return true;
  }
  s.pending = tok;
  return false;
}

absl::Status BatchGenerator::Step() {
  const double t0 = Now();
  Admit();
  // Cancellations of running requests.
  std::set<int64_t> cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled = cancelled_;
  }
  for (auto& s : slots_) {
    if (s != nullptr && cancelled.count(s->index)) Finish(*s, "cancelled");
  }

  // Active sequences in submission order: prefill budget goes to the oldest.
  std::vector<Sequence*> active;
  for (auto& s : slots_) {
    if (s != nullptr) active.push_back(s.get());
  }
  std::sort(active.begin(), active.end(),
            [](const Sequence* a, const Sequence* b) { return a->index < b->index; });
  std::vector<BatchSlot> batch;
  std::vector<Sequence*> owner;
  std::vector<int64_t> prefill_take;
  int64_t budget = options_.max_prefill_tokens_per_step;
  for (Sequence* s : active) {
    if (s->decoding()) {
      batch.push_back({&caches_[s->slot], &s->pending, 1, true});
      prefill_take.push_back(0);
    } else {
      const int64_t take = std::min(budget, s->prompt_size() - s->prefilled);
      if (take == 0) continue;
      budget -= take;
      batch.push_back({&caches_[s->slot], s->request.prompt.data() + s->prefilled, take,
                       s->prefilled + take == s->prompt_size()});
      prefill_take.push_back(take);
    }
    owner.push_back(s);
  }
  if (batch.empty()) {
    stats_.total_seconds += Now() - t0;
    return absl::OkStatus();
  }

  const double tf = Now();
  absl::Status status = model_.ForwardBatch(batch, logits_.data());
  stats_.forward_seconds += Now() - tf;
  ++stats_.steps;
  if (!status.ok()) {
    for (Sequence* s : owner) Finish(*s, "error", status);
    stats_.total_seconds += Now() - t0;
    return status;
  }

  const int64_t vocab = model_.config().vocab_size;
  for (size_t i = 0; i < batch.size(); ++i) {
    Sequence* s = owner[i];
    s->prefilled += prefill_take[i];
    stats_.prompt_tokens += prefill_take[i];
    if (!batch[i].want_logits) continue;
    const float* row = logits_.data() + static_cast<int64_t>(i) * vocab;
    const int32_t tok = s->sampler.Sample(row, vocab, s->history);
    if (tok < 0) {
      Finish(*s, "error",
             absl::InternalError(absl::StrCat("generation request '", s->request.id,
                                              "': no token can be sampled (logits all NaN or "
                                              "-inf)")));
      continue;
    }
    ++stats_.generated_tokens;
    Record(*s, row, tok);
  }
  stats_.total_seconds += Now() - t0;
  return absl::OkStatus();
}

absl::Status BatchGenerator::RunUntilIdle() {
  while (HasWork()) RETURN_IF_ERROR(Step());
  return absl::OkStatus();
}

absl::Status BatchGenerator::Run() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return closed_ || !queue_.empty() || running_ > 0; });
      if (closed_ && queue_.empty() && running_ == 0) return absl::OkStatus();
    }
    absl::Status s = Step();
    if (!s.ok()) return s;
  }
}

std::vector<GenerationResult> BatchGenerator::Generate(std::vector<GenerationRequest> requests) {
  std::map<int64_t, GenerationResult> done;
  auto user = options_.on_finished;
  options_.on_finished = [&](GenerationResult&& r) {
    if (user) user(GenerationResult(r));
    const int64_t index = r.index;
    done[index] = std::move(r);
  };
  std::vector<int64_t> indices;
  for (GenerationRequest& r : requests) indices.push_back(Submit(std::move(r)));
  absl::Status status = RunUntilIdle();
  options_.on_finished = user;
  std::vector<GenerationResult> out;
  for (int64_t index : indices) {
    auto it = done.find(index);
    if (it != done.end()) {
      out.push_back(std::move(it->second));
    } else {  // only after an engine failure that left it unfinished
      GenerationResult r;
      r.index = index;
      r.status = status.ok() ? absl::InternalError("request did not finish") : status;
      r.finish_reason = "error";
      out.push_back(std::move(r));
    }
  }
  return out;
}

}  // namespace retort
