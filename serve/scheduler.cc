#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <iostream>

#include "core/status.h"

namespace retort::serve {

absl::StatusOr<std::vector<GeneratedToken>> PromptLogprobs(const Transformer& engine,
                                                           const std::vector<int32_t>& prompt,
                                                           int top_logprobs) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  const int64_t vocab = engine.config().vocab_size;
  std::vector<GeneratedToken> scored;
  if (n < 2) return scored;
  scored.reserve(n - 1);
  KvCache cache = engine.NewCache(n);
  const int64_t chunk = Transformer::kPrefillChunk;
  std::vector<float> logits(std::min(n, chunk) * vocab);
  std::vector<int32_t> top;
  // The last token's logits score nothing: a last piece of that token alone
  // is not run.
  for (int64_t begin = 0; begin < n - 1; begin += chunk) {
    const int64_t count = std::min(chunk, n - begin);
    RETURN_IF_ERROR(
        engine.Forward(prompt.data() + begin, count, cache, logits.data(), LogitsMode::kAll));
    for (int64_t i = 0; i < count && begin + i + 1 < n; ++i) {
      const float* row = logits.data() + i * vocab;
      const double log_z = LogSumExp(row, vocab, 1.f);
      auto logprob = [&](int32_t id) { return static_cast<float>(row[id] - log_z); };
      const int32_t next = prompt[begin + i + 1];
      GeneratedToken t{next, logprob(next), {}};
      t.rank = 1 + static_cast<int32_t>(
                       std::count_if(row, row + vocab, [&](float v) { return v > row[next]; }));
      if (top_logprobs > 0) {
        TopKIds(row, vocab, top_logprobs, &top);
        for (int32_t id : top) t.top.emplace_back(id, logprob(id));
      }
      scored.push_back(std::move(t));
    }
  }
  return scored;
}

BatchedGenerator::BatchedGenerator(const Transformer& engine, int64_t max_batch) : engine_(engine) {
  GeneratorOptions options;
  options.max_batch = max_batch;
  options.on_token = [this](const TokenEvent& e) {
    std::shared_ptr<Waiter> w = Find(e.index);
    if (!w) return;
    std::lock_guard<std::mutex> lock(w->mu);
    w->tokens.push_back({e.token, e.logprob, {}});
    w->cv.notify_one();
  };
  options.on_finished = [this](GenerationResult&& r) {
    std::shared_ptr<Waiter> w;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = waiters_.find(r.index);
      if (it == waiters_.end()) return;
      w = it->second;
      waiters_.erase(it);
    }
    std::lock_guard<std::mutex> lock(w->mu);
    w->result = std::move(r);
    w->cv.notify_one();
  };
  batch_ = std::make_unique<BatchGenerator>(engine, std::move(options));
  loop_ = std::thread([this] { Loop(); });
}

BatchedGenerator::~BatchedGenerator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_ = true;
  }
  work_.notify_one();
  loop_.join();
}

void BatchedGenerator::Loop() {
  for (;;) {
    std::vector<Scoring*> scorings;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [this] { return closing_ || !scorings_.empty() || batch_->Pending() > 0; });
      if (closing_ && scorings_.empty() && batch_->Pending() == 0) return;
      scorings.swap(scorings_);
    }
    for (Scoring* s : scorings) {
      s->done.set_value(PromptLogprobs(engine_, *s->prompt, s->top_logprobs));
    }
    if (batch_->Pending() == 0) continue;
    // An error is an engine failure: the running requests are finished with
    // it; keep serving the next ones.
    absl::Status s = batch_->Step();
    if (!s.ok()) std::cerr << "retort serve: generation step failed: " << s.message() << "\n";
  }
}

absl::StatusOr<std::vector<GeneratedToken>> BatchedGenerator::ScorePrompt(
    const std::vector<int32_t>& prompt, int top_logprobs) {
  Scoring s{&prompt, top_logprobs, {}};
  std::future<absl::StatusOr<std::vector<GeneratedToken>>> done = s.done.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    scorings_.push_back(&s);
  }
  work_.notify_one();
  return done.get();
}

absl::StatusOr<SequenceEnd> BatchedGenerator::Generate(const SequenceRequest& request,
                                                       const TokenCallback& on_token) {
  GenerationRequest r;
  r.prompt = request.prompt;
  r.sampling = request.sampler;
  r.max_new_tokens = request.max_new_tokens;
  r.stop_token_ids = request.stop_ids;
  r.ignore_eos =
      true;  // request.stop_ids already holds the EOS ids unless the client said ignore_eos
  // Kept so that the answer can name it (stop_reason); never handed on.
  r.include_stop_token = true;
  r.top_logprobs = std::max(0, request.top_logprobs);
  const bool live = r.top_logprobs == 0;
  auto is_stop = [&request](int32_t id) {
    return std::find(request.stop_ids.begin(), request.stop_ids.end(), id) !=
           request.stop_ids.end();
  };
  auto w = std::make_shared<Waiter>();
  int64_t index;
  {
    std::lock_guard<std::mutex> lock(mu_);
    index = batch_->Submit(std::move(r));
    waiters_[index] = w;
  }
  work_.notify_one();
  bool cancelled = false;
  size_t delivered = 0;
  for (;;) {
    std::vector<GeneratedToken> tokens;
    bool done;
    {
      std::unique_lock<std::mutex> lock(w->mu);
      while (!w->cv.wait_for(lock, std::chrono::milliseconds(50), [&] {
        return w->result.has_value() || w->tokens.size() > delivered;
      })) {
        if (!cancelled && request.abort && *request.abort) {
          cancelled = true;
          batch_->Cancel(index);
        }
      }
      done = w->result.has_value();
      if (live) tokens.assign(w->tokens.begin() + delivered, w->tokens.end());
      delivered = w->tokens.size();
    }
    for (const GeneratedToken& t : tokens) {
      if (cancelled || is_stop(t.id)) break;  // a stop id is the last token
      if (!on_token(t)) {
        cancelled = true;
        batch_->Cancel(index);
      }
    }
    if (done) break;
  }
  const GenerationResult& result = *w->result;
  if (!result.status.ok()) return result.status;
  SequenceEnd end{result.finish_reason, -1};
  size_t kept = result.tokens.size();
  if (end.finish_reason == "stop" && kept > 0 && is_stop(result.tokens.back())) {
    end.stop_id = result.tokens.back();
    --kept;
  }
  if (!live) {
    for (size_t i = 0; i < kept && !cancelled; ++i) {
      GeneratedToken t{result.tokens[i], result.logprobs[i], {}};
      for (int32_t k = 0; k < result.top_k; ++k) {
        t.top.emplace_back(result.topk_ids[i * result.top_k + k],
                           result.topk_logprobs[i * result.top_k + k]);
      }
      if (!on_token(t)) cancelled = true;
    }
  }
  if (cancelled) return SequenceEnd{"cancelled", -1};
  return end;  // "stop", "length" (or "cancelled")
}

std::shared_ptr<BatchedGenerator::Waiter> BatchedGenerator::Find(int64_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiters_.find(index);
  return it == waiters_.end() ? nullptr : it->second;
}

}  // namespace retort::serve
