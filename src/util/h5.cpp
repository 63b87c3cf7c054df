#include "hgqt/util/h5.h"

namespace hgqt::util::h5 {

namespace {
std::recursive_mutex& mutex() {
  static std::recursive_mutex m;
  return m;
}
}  // namespace

Lock::Lock() : lock_(mutex()) {
  if (H5Eget_auto2(H5E_DEFAULT, &func_, &data_) < 0) {
    func_ = nullptr;
    data_ = nullptr;
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

Lock::~Lock() {
  H5Eset_auto2(H5E_DEFAULT, func_, data_);
}

}  // namespace hgqt::util::h5
