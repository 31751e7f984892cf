#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <iostream>

namespace retort::serve {

BatchedGenerator::BatchedGenerator(const Transformer& engine, int64_t max_batch) {
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
  loop_ = std::thread([this] {
    // Run() returns an error after an engine failure (the running requests
    // are finished with it); keep serving the next ones.
    for (;;) {
      absl::Status s = batch_->Run();
      if (s.ok()) return;
      std::cerr << "retort serve: generation step failed: " << s.message() << "\n";
    }
  });
}

BatchedGenerator::~BatchedGenerator() {
  batch_->Close();
  loop_.join();
}

absl::StatusOr<std::string> BatchedGenerator::Generate(const SequenceRequest& request,
                                                       const TokenCallback& on_token) {
  GenerationRequest r;
  r.prompt = request.prompt;
  r.sampling = request.sampler;
  r.max_new_tokens = request.max_new_tokens;
  r.stop_token_ids = request.stop_ids;
  r.ignore_eos =
      true;  // request.stop_ids already holds the EOS ids unless the client said ignore_eos
  r.include_stop_token = false;
  r.top_logprobs = std::max(0, request.top_logprobs);
  const bool live = r.top_logprobs == 0;
  auto w = std::make_shared<Waiter>();
  int64_t index;
  {
    std::lock_guard<std::mutex> lock(mu_);
    index = batch_->Submit(std::move(r));
    waiters_[index] = w;
  }
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
      if (cancelled) break;
      if (!on_token(t)) {
        cancelled = true;
        batch_->Cancel(index);
      }
    }
    if (done) break;
  }
  const GenerationResult& result = *w->result;
  if (!result.status.ok()) return result.status;
  if (!live) {
    for (size_t i = 0; i < result.tokens.size() && !cancelled; ++i) {
      GeneratedToken t{result.tokens[i], result.logprobs[i], {}};
      for (int32_t k = 0; k < result.top_k; ++k) {
        t.top.emplace_back(result.topk_ids[i * result.top_k + k],
                           result.topk_logprobs[i * result.top_k + k]);
      }
      if (!on_token(t)) cancelled = true;
    }
  }
  if (cancelled) return std::string("cancelled");
  return result.finish_reason;  // "stop", "length" (or "cancelled")
}

std::shared_ptr<BatchedGenerator::Waiter> BatchedGenerator::Find(int64_t index) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiters_.find(index);
  return it == waiters_.end() ? nullptr : it->second;
}

}  // namespace retort::serve
