// The V4 router of the moe_route CPU kernel, for the kernels that route on their own logits (moe_ffn):
// one implementation of the scores, the selection (biased top-k or hash table) and the weights.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace v4_ascend::cpu {

// (weights [T, topk] in the logits' dtype, idx [T, topk] int32) of moe_route(logits, ...), with its
// argument checks (errors name moe_route and the argument).
std::tuple<at::Tensor, at::Tensor> route_experts(const at::Tensor& logits, int64_t topk, double route_scale,
                                                 const std::optional<at::Tensor>& bias,
                                                 const std::optional<at::Tensor>& token_ids,
                                                 const std::optional<at::Tensor>& tid2eid);

}  // namespace v4_ascend::cpu
