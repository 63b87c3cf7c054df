// One HDF5 wrapper for every HDF5 file hgqt reads or writes (data sets, the archive's
// tensors.h5): a process-wide lock that serializes the calls (Debian's serial HDF5 is not
// thread-safe, and two locks, one per file kind, would let a data read and an archive write run
// at once) and silences HDF5's own error printing while held, and an owning identifier.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <utility>

namespace hgqt::util::h5 {

/// Held around every sequence of HDF5 calls: takes the process-wide HDF5 lock (recursive) and
/// turns HDF5's automatic error printing off for the calling thread, restoring the previous
/// handler on release.
class Lock {
 public:
  Lock();
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  std::lock_guard<std::recursive_mutex> lock_;
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

/// Owns one HDF5 identifier and closes it with the matching H5?close function.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, -1)), closer_(other.closer_) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, -1);
      closer_ = other.closer_;
    }
    return *this;
  }
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && closer_ != nullptr) closer_(id_);
    id_ = -1;
  }
  /// Closes now and reports whether the close succeeded (a file close flushes data).
  bool close() {
    if (id_ < 0) return true;
    const herr_t rc = closer_ != nullptr ? closer_(id_) : 0;
    id_ = -1;
    return rc >= 0;
  }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

}  // namespace hgqt::util::h5
