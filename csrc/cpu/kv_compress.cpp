// ATen adapter of the stateful KV compressor: argument checks like the reference, dtype dispatch, threads
// over the (sequence, block) items of the call, then the per-sequence state update. Non-contiguous kv,
// score and ape are made contiguous (a copy); a non-contiguous state is updated through a contiguous copy
// that is copied back, so the caller's tensors are still the ones mutated.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <sstream>

#include "cpu/checks.h"
#include "cpu/registry.h"
#include "kernels/kv_compress.h"

namespace v4_ascend::cpu {
namespace {

KernelEntry& entry = describe_kernel(
    "kv_compress",
    "C++ fused gated pooling per block, read in the input dtype (AVX-512 softmax over channel tiles, portable "
    "otherwise), blocks across threads");

void check_state(const char* op, const char* arg, const at::Tensor& state, at::ScalarType acc, int64_t B,
                 int64_t rows, int64_t F) {
  check_dtype(op, arg, state, acc);
  check_shape(op, arg, state, {B, rows, F});
}

// The Python spelling of a list of lengths, as the reference prints it.
std::string python_list(const int32_t* x, int64_t n) {
  std::ostringstream text;
  text << "[";
  for (int64_t i = 0; i < n; ++i) text << (i ? ", " : "") << x[i];
  text << "]";
  return text.str();
}

template <typename T, typename A = typename v4k::Acc<T>::type>
void run(const at::Tensor& kv, const at::Tensor& score, const at::Tensor& ape, const int32_t* start,
         const int32_t* length, at::Tensor& kv_state, at::Tensor& score_state, const v4k::KvCompressShape& s,
         at::Tensor& entries, at::Tensor& positions, at::Tensor& owners) {
  const int64_t B = kv_state.size(0), rows = kv_state.size(1) * s.F;
  std::vector<v4k::KvSequence<T, A>> seqs(B);
  std::vector<int64_t> first_entry(B + 1, 0);
  int64_t row = 0;
  for (int64_t b = 0; b < B; ++b) {
    seqs[b] = {reinterpret_cast<const T*>(kv.data_ptr()) + row * s.F,
               reinterpret_cast<const T*>(score.data_ptr()) + row * s.F,
               ape.data_ptr<A>(),
               start[b],
               length[b],
               kv_state.data_ptr<A>() + b * rows,
               score_state.data_ptr<A>() + b * rows};
    row += length[b];
    first_entry[b + 1] = first_entry[b] + (length[b] ? seqs[b].blocks(s) : 0);
  }
  const int64_t M = first_entry[B];
  entries.resize_({M, s.d()});
  positions.resize_({M});
  owners.resize_({M});
  A* out = entries.data_ptr<A>();
  int32_t* pos = positions.data_ptr<int32_t>();
  int32_t* seq_of = owners.data_ptr<int32_t>();
  at::parallel_for(0, M, 1, [&](int64_t begin, int64_t end) {
    v4k::KvCompressWorkspace<T, A> ws(s);
    int64_t b = std::upper_bound(first_entry.begin(), first_entry.end(), begin) - first_entry.begin() - 1;
    for (int64_t m = begin; m < end; b++) {
      const int64_t stop = std::min(end, first_entry[b + 1]);
      if (stop <= m) continue;
      const int64_t i0 = m - first_entry[b], i1 = stop - first_entry[b];
      v4k::kv_compress_blocks(seqs[b], s, i0, i1, out + m * s.d(), ws);
      for (int64_t i = i0; i < i1; ++i) {
        pos[first_entry[b] + i] = static_cast<int32_t>((seqs[b].start / s.ratio + i) * s.ratio);
        seq_of[first_entry[b] + i] = static_cast<int32_t>(b);
      }
      m = stop;
    }
  });
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      if (seqs[b].length) v4k::kv_compress_update_state(seqs[b], s);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kv_compress(const at::Tensor& kv, const at::Tensor& score,
                                                           const at::Tensor& ape, const at::Tensor& start_pos,
                                                           const at::Tensor& seq_lens, at::Tensor& kv_state,
                                                           at::Tensor& score_state, int64_t ratio, bool overlap) {
  const char* op = "kv_compress";
  check_rank(op, "kv", kv, 2);
  check_float(op, "kv", kv);
  check_shape(op, "score", score, kv.sizes());
  TORCH_CHECK_VALUE(score.scalar_type() == kv.scalar_type(), op, ": 'score' must be ", dtype_name(kv.scalar_type()),
                    " like 'kv', got ", dtype_name(score.scalar_type()));
  TORCH_CHECK_VALUE(ratio >= 1, op, ": 'ratio' must be a positive int, got ", ratio);
  const int64_t S = kv.size(0), F = kv.size(1);
  TORCH_CHECK_VALUE(!overlap || F % 2 == 0, op, ": 'kv' must be an even last dim with overlap=True (two halves), got ",
                    F);
  check_float(op, "ape", ape);
  check_shape(op, "ape", ape, {ratio, F});
  check_rank(op, "start_pos", start_pos, 1);
  check_dtype(op, "start_pos", start_pos, at::kInt);
  const int64_t B = start_pos.size(0);
  check_rank(op, "seq_lens", seq_lens, 1);
  check_dtype(op, "seq_lens", seq_lens, at::kInt);
  check_shape(op, "seq_lens", seq_lens, {B});
  const auto acc = kv.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t rows = (overlap ? 2 : 1) * ratio;
  check_state(op, "kv_state", kv_state, acc, B, rows, F);
  check_state(op, "score_state", score_state, acc, B, rows, F);
  const auto starts = start_pos.contiguous(), lens = seq_lens.contiguous();
  const int32_t* start = starts.data_ptr<int32_t>();
  const int32_t* length = lens.data_ptr<int32_t>();
  if (B > 0) {
    const int32_t least = *std::min_element(start, start + B);
    TORCH_CHECK_VALUE(least >= 0, op, ": 'start_pos' values must be >= 0, got ", least);
  }
  int64_t total = 0;
  bool negative = false;
  for (int64_t b = 0; b < B; ++b) total += length[b], negative |= length[b] < 0;
  TORCH_CHECK_VALUE(!negative && total == S, op, ": 'seq_lens' must be >= 0 and sum to ", S, " rows of kv, got ",
                    python_list(length, B));
  entry.calls.fetch_add(1, std::memory_order_relaxed);

  const auto kvc = kv.contiguous(), scorec = score.contiguous(), apec = ape.to(acc).contiguous();
  auto kv_work = kv_state.contiguous(), score_work = score_state.contiguous();
  auto entries = at::empty({0}, kv.options().dtype(acc));
  auto positions = at::empty({0}, kv.options().dtype(at::kInt));
  auto owners = at::empty({0}, kv.options().dtype(at::kInt));
  const v4k::KvCompressShape shape{F, ratio, overlap};
  switch (kv.scalar_type()) {
    case at::kDouble:
      run<double>(kvc, scorec, apec, start, length, kv_work, score_work, shape, entries, positions, owners);
      break;
    case at::kFloat:
      run<float>(kvc, scorec, apec, start, length, kv_work, score_work, shape, entries, positions, owners);
      break;
    case at::kBFloat16:
      run<v4k::bf16>(kvc, scorec, apec, start, length, kv_work, score_work, shape, entries, positions, owners);
      break;
    default:
      run<_Float16>(kvc, scorec, apec, start, length, kv_work, score_work, shape, entries, positions, owners);
      break;
  }
  if (!kv_state.is_same(kv_work)) kv_state.copy_(kv_work);
  if (!score_state.is_same(score_work)) score_state.copy_(score_work);
  return {entries, positions, owners};
}

}  // namespace

TORCH_LIBRARY_IMPL(v4_ascend, CPU, m) { m.impl("kv_compress", &kv_compress); }

}  // namespace v4_ascend::cpu
