// A process-wide table read on every op call and written rarely (when something is planned or installed): lookups
// take a shared lock, inserts an exclusive one. Used for the GEMM door's plans and the cast kernels.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>

namespace deepgemm_ops {

template <class Key, class Value, class Hash = std::hash<Key>>
class SharedTable {
 public:
  std::optional<Value> find(const Key& key) const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    return it->second;
  }
  void insert(const Key& key, const Value& value) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    entries_[key] = value;
  }
  // Returns how many entries there were.
  size_t clear() {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    const size_t n = entries_.size();
    entries_.clear();
    return n;
  }
  size_t size() const {
    std::shared_lock<std::shared_mutex> lock(mutex_);
    return entries_.size();
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_map<Key, Value, Hash> entries_;
};

}  // namespace deepgemm_ops
