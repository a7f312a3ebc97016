// HDF5 (pkg-config hdf5-serial; Debian: libhdf5-dev, headers in /usr/include/hdf5/serial).
// HDF5's type and property-list identifiers are macros over globals that Swift cannot import,
// so they are exposed here as static inline getters.
#include <hdf5.h>

static inline hid_t chdf5_native_float(void)  { return H5T_NATIVE_FLOAT; }
static inline hid_t chdf5_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t chdf5_native_int64(void)  { return H5T_NATIVE_INT64; }
static inline hid_t chdf5_native_int32(void)  { return H5T_NATIVE_INT32; }
static inline hid_t chdf5_native_uint8(void)  { return H5T_NATIVE_UINT8; }
static inline hid_t chdf5_c_s1(void)          { return H5T_C_S1; }
static inline hid_t chdf5_p_dataset_create(void) { return H5P_DATASET_CREATE; }
static inline hid_t chdf5_p_file_access(void) { return H5P_FILE_ACCESS; }
static inline hid_t chdf5_p_default(void)     { return H5P_DEFAULT; }
static inline hid_t chdf5_s_all(void)         { return H5S_ALL; }
static inline hsize_t chdf5_s_unlimited(void) { return H5S_UNLIMITED; }
static inline hid_t chdf5_e_default(void)     { return H5E_DEFAULT; }
static inline size_t chdf5_t_variable(void)   { return H5T_VARIABLE; }
static inline hid_t chdf5_p_link_create(void) { return H5P_LINK_CREATE; }
static inline herr_t chdf5_silence_errors(void) { return H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }
static inline unsigned chdf5_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned chdf5_acc_rdwr(void)   { return H5F_ACC_RDWR; }
static inline unsigned chdf5_acc_trunc(void)  { return H5F_ACC_TRUNC; }
