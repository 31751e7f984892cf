// Trace files: what a teacher writes and a student learns from.
//
// Two formats live side by side in a traces/ folder (formats/traces.md has
// both byte by byte):
//
//  * JSONL, one TraceSample per line, in open-r1's layout (a chat "messages"
//    list whose assistant turn carries "reasoning_content"), so other tools
//    read our traces and we read theirs. The reader also accepts plain OpenAI
//    chat lines, ShareGPT "conversations" and open-r1's dataset columns
//    (problem / generation(s) / answer / solution).
//
//  * Token shards: TraceTokens records (prompt and completion ids, the
//    teacher's top-k log-probs per generated token) as length-delimited
//    protobuf messages (formats/proto/trace.proto) inside a sequence of zstd
//    frames. The writer appends one frame per Commit() and fsyncs, so a crash
//    leaves a readable prefix of whole frames; the reader returns every record
//    of the intact frames and then reports the damaged tail.
//
// Thread-safety: the free functions are pure. A TraceShardWriter or
// TraceShardReader is used by one thread at a time.//
// This header gathers the three parts: formats/trace_jsonl.h (the JSONL
// samples), formats/topk_codec.h (the top-k bytes) and formats/trace_shards.h
// (the token shards).
#ifndef RETORT_FORMATS_TRACES_H_
#define RETORT_FORMATS_TRACES_H_

#include "formats/topk_codec.h"    // IWYU pragma: export
#include "formats/trace_jsonl.h"   // IWYU pragma: export
#include "formats/trace_shards.h"  // IWYU pragma: export

#endif  // RETORT_FORMATS_TRACES_H_
