/* The Solana SBPFv0 program ABI, as much of it as the pocv job program uses.
 *
 * Written for pocv from the runtime's documented conventions (the aligned input serialization
 * of the BPF loaders, the C calling convention of the syscalls); it follows the layout of the
 * Solana C SDK (sdk/sbf/c/inc in solana-labs/solana, Apache-2.0) without copying it. Only
 * syscalls that both LiteSVM (Agave 4.x) and solana-bankrun (Agave 1.18) resolve at deploy.
 */
#pragma once

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long int uint64_t;
typedef long int int64_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL 0

typedef struct { uint64_t w[4]; } SolPubkey; /* 32 bytes, 8-aligned wherever the ABI puts one */

typedef struct {
  SolPubkey *key;
  uint64_t *lamports;
  uint64_t data_len;
  uint8_t *data;
  SolPubkey *owner;
  uint64_t rent_epoch;
  bool is_signer;
  bool is_writable;
  bool executable;
} SolAccountInfo;

typedef struct {
  SolPubkey *pubkey;
  bool is_writable;
  bool is_signer;
} SolAccountMeta;

typedef struct {
  SolPubkey *program_id;
  SolAccountMeta *accounts;
  uint64_t account_len;
  uint8_t *data;
  uint64_t data_len;
} SolInstruction;

typedef struct { const uint8_t *addr; uint64_t len; } SolSignerSeed;
typedef struct { const SolSignerSeed *addr; uint64_t len; } SolSignerSeeds;

typedef struct {
  uint64_t slot;
  int64_t epoch_start_timestamp;
  uint64_t epoch;
  uint64_t leader_schedule_epoch;
  int64_t unix_timestamp;
} SolClock;

typedef struct {
  uint64_t lamports_per_byte_year;
  uint64_t exemption_threshold_f64_bits; /* an f64; read as bits (no floating point here) */
  uint8_t burn_percent;
} SolRent;

/* syscalls (the loader patches each `call -1` with the murmur3 hash of the name) */
void sol_log_(const char *, uint64_t);
void sol_log_64_(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);
uint64_t sol_invoke_signed_c(const SolInstruction *, const SolAccountInfo *, int, const SolSignerSeeds *, int);
uint64_t sol_try_find_program_address(const SolSignerSeed *, int, const SolPubkey *, SolPubkey *, uint8_t *);
uint64_t sol_get_clock_sysvar(void *);
uint64_t sol_get_rent_sysvar(void *);

#define SOL_LOG(lit) sol_log_((lit), sizeof(lit) - 1)

/* Input serialization of the aligned BPF loaders (loader v2 and upgradeable):
 * u64 account count; per account either a duplicate marker (u8 index, 7 bytes padding) or
 * u8 0xff, u8 signer, u8 writable, u8 executable, 4 bytes padding, key, owner, u64 lamports,
 * u64 data length, data, 10 KiB realloc space, padding to 8, u64 rent epoch; then u64
 * instruction data length, the data, and the program id. */
#define MAX_PERMITTED_DATA_INCREASE (1024 * 10)
#define NON_DUP_MARKER 0xff
