//! Coverage registration with libFuzzer, done explicitly.
//!
//! An object compiled with `-fsanitize=fuzzer-no-link` registers its inline 8-bit counters
//! (`__sancov_cntrs`) and PC table (`__sancov_pcs`) from a constructor calling
//! `__sanitizer_cov_8bit_counters_init` / `__sanitizer_cov_pcs_init`. Under an uninstrumented
//! CPython with clang's ASan runtime preloaded, those calls bind to the runtime's weak no-ops (it is
//! first in the lookup order), so libFuzzer (statically linked into this engine, its symbols local to
//! it) never hears of them. After the target is imported we walk the loaded objects, read each one's
//! section headers from its file, and register the sections ourselves.
//!
//! We also register a region of our own: one counter per *outcome signature* slot, bumped by the
//! runtime's verdict on each call. It is the only guidance when the target is not instrumented.
use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void, CStr};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicUsize, Ordering};

unsafe extern "C" {
    fn __sanitizer_cov_8bit_counters_init(start: *mut u8, stop: *mut u8);
    fn __sanitizer_cov_pcs_init(pcs_beg: *const usize, pcs_end: *const usize);
}

// libFuzzer's comparison hooks (local to this engine). Declared without their real parameters: only
// their addresses are taken, to hand them to the preloaded shim (see `install_cmp_hooks`).
unsafe extern "C" {
    fn __sanitizer_cov_trace_cmp1();
    fn __sanitizer_cov_trace_cmp2();
    fn __sanitizer_cov_trace_cmp4();
    fn __sanitizer_cov_trace_cmp8();
    fn __sanitizer_cov_trace_const_cmp1();
    fn __sanitizer_cov_trace_const_cmp2();
    fn __sanitizer_cov_trace_const_cmp4();
    fn __sanitizer_cov_trace_const_cmp8();
    fn __sanitizer_cov_trace_switch();
    fn __sanitizer_cov_trace_div4();
    fn __sanitizer_cov_trace_div8();
    fn __sanitizer_cov_trace_gep();
    fn __sanitizer_cov_trace_pc_indir();
    fn __sanitizer_weak_hook_memcmp();
    fn __sanitizer_weak_hook_strncmp();
    fn __sanitizer_weak_hook_strcmp();
    fn __sanitizer_weak_hook_strncasecmp();
    fn __sanitizer_weak_hook_strcasecmp();
    fn __sanitizer_weak_hook_strstr();
    fn __sanitizer_weak_hook_strcasestr();
    fn __sanitizer_weak_hook_memmem();
}

/// Point the comparison-tracing shim (`ffi_harness/cmpshim.py`, preloaded before the ASan runtime)
/// at libFuzzer's hooks. Returns whether the shim is present.
pub fn install_cmp_hooks() -> bool {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks the symbol up.
    let table =
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"ffi_harness_cmp_hooks".as_ptr()) } as *mut usize;
    if table.is_null() {
        return false;
    }
    let hooks: [unsafe extern "C" fn(); 21] = [
        __sanitizer_cov_trace_cmp1,
        __sanitizer_cov_trace_cmp2,
        __sanitizer_cov_trace_cmp4,
        __sanitizer_cov_trace_cmp8,
        __sanitizer_cov_trace_const_cmp1,
        __sanitizer_cov_trace_const_cmp2,
        __sanitizer_cov_trace_const_cmp4,
        __sanitizer_cov_trace_const_cmp8,
        __sanitizer_cov_trace_switch,
        __sanitizer_cov_trace_div4,
        __sanitizer_cov_trace_div8,
        __sanitizer_cov_trace_gep,
        __sanitizer_cov_trace_pc_indir,
        __sanitizer_weak_hook_memcmp,
        __sanitizer_weak_hook_strncmp,
        __sanitizer_weak_hook_strcmp,
        __sanitizer_weak_hook_strncasecmp,
        __sanitizer_weak_hook_strcasecmp,
        __sanitizer_weak_hook_strstr,
        __sanitizer_weak_hook_strcasestr,
        __sanitizer_weak_hook_memmem,
    ];
    for (i, hook) in hooks.iter().enumerate() {
        // SAFETY: the shim's `struct ffi_harness_cmp_hooks` is 21 function pointers in this order
        // (cmpshim.py); we are single-threaded here (before the driver starts) and the pointers stay
        // valid for the process's life (statically linked into this engine, never unloaded).
        unsafe { table.add(i).write_volatile(*hook as usize) };
    }
    true
}

/// Signature slots (a power of two).
pub const SIGNATURE_SLOTS: usize = 1 << 14;

struct Region(UnsafeCell<[u8; SIGNATURE_SLOTS]>);
// SAFETY: the region is written only from the fuzzing thread (the libFuzzer callback) and read by
// libFuzzer on that same thread between runs.
unsafe impl Sync for Region {}

static SIGNATURES: Region = Region(UnsafeCell::new([0; SIGNATURE_SLOTS]));
static SEEN: Region = Region(UnsafeCell::new([0; SIGNATURE_SLOTS]));
static SEEN_COUNT: AtomicUsize = AtomicUsize::new(0);
static MODULES: AtomicUsize = AtomicUsize::new(0);

/// Count one occurrence of an outcome signature (a hash) in this run.
pub fn bump_signature(hash: u64) {
    let slot = (hash as usize) & (SIGNATURE_SLOTS - 1);
    // SAFETY: single-threaded use (see `Region`); `slot` is in bounds.
    unsafe {
        let c = &mut (*SIGNATURES.0.get())[slot];
        *c = c.saturating_add(1);
        let s = &mut (*SEEN.0.get())[slot];
        if *s == 0 {
            *s = 1;
            SEEN_COUNT.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Distinct signature slots hit so far.
pub fn signatures_seen() -> usize {
    SEEN_COUNT.load(Ordering::Relaxed)
}

/// Native objects whose coverage was registered.
pub fn registered_modules() -> usize {
    MODULES.load(Ordering::Relaxed)
}

/// Section `name`'s (address, size) in an ELF64 little-endian file, from its section headers.
fn elf_sections(path: &str, wanted: &[&str]) -> std::io::Result<Vec<Option<(u64, u64)>>> {
    let mut f = File::open(path)?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an ELF64 LE file");
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return Err(bad());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let shoff = u64_at(&eh, 0x28);
    let shentsize = usize::from(u16_at(&eh, 0x3A));
    let shnum = usize::from(u16_at(&eh, 0x3C));
    let shstrndx = usize::from(u16_at(&eh, 0x3E));
    if shoff == 0 || shentsize < 64 || shstrndx >= shnum {
        return Ok(vec![None; wanted.len()]);
    }
    let mut sh = vec![0u8; shentsize * shnum];
    f.seek(SeekFrom::Start(shoff))?;
    f.read_exact(&mut sh)?;
    let hdr = |i: usize| &sh[i * shentsize..(i + 1) * shentsize];
    let strtab = hdr(shstrndx);
    let (str_off, str_size) = (u64_at(strtab, 0x18), u64_at(strtab, 0x20));
    let mut names = vec![0u8; usize::try_from(str_size).map_err(|_| bad())?];
    f.seek(SeekFrom::Start(str_off))?;
    f.read_exact(&mut names)?;
    let mut out = vec![None; wanted.len()];
    for i in 0..shnum {
        let h = hdr(i);
        let name_off = u32_at(h, 0) as usize;
        if name_off >= names.len() {
            continue;
        }
        let end = names[name_off..]
            .iter()
            .position(|&b| b == 0)
            .map_or(names.len(), |p| name_off + p);
        let name = &names[name_off..end];
        for (j, w) in wanted.iter().enumerate() {
            if name == w.as_bytes() {
                out[j] = Some((u64_at(h, 0x10), u64_at(h, 0x20)));
            }
        }
    }
    Ok(out)
}

struct Found {
    objects: Vec<(String, usize)>,
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and the `data` pointer we gave it (a `Found`).
    let (info, found) = unsafe { (&*info, &mut *(data as *mut Found)) };
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    found.objects.push((name, info.dlpi_addr as usize));
    0
}

fn own_path() -> Option<String> {
    let mut info: libc::Dl_info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr only reads the address and fills `info`.
    let ok = unsafe { libc::dladdr(own_path as *const c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// Register every loaded instrumented object (but this engine) and the signature region.
/// Returns a one-line report: how many native objects and counters were registered.
pub fn register_loaded_objects() -> String {
    let mut found = Found {
        objects: Vec::new(),
    };
    // SAFETY: `visit` matches the callback type and only reads what the loader hands it.
    unsafe { libc::dl_iterate_phdr(Some(visit), &mut found as *mut Found as *mut c_void) };
    let me = own_path().and_then(|p| std::fs::canonicalize(p).ok());
    let mut modules = 0usize;
    let mut counters = 0u64;
    let mut names = Vec::new();
    for (name, base) in found.objects {
        let path = if name.is_empty() {
            "/proc/self/exe".to_owned()
        } else {
            name.clone()
        };
        if me.is_some() && std::fs::canonicalize(&path).ok() == me {
            continue;
        }
        let Ok(secs) = elf_sections(&path, &["__sancov_cntrs", "__sancov_pcs"]) else {
            continue;
        };
        let (Some((c_addr, c_size)), Some((p_addr, p_size))) = (secs[0], secs[1]) else {
            continue;
        };
        if c_size == 0 || p_size != c_size * 16 {
            eprintln!("ffi-harness engine: {path}: counters and PC table disagree ({c_size} vs {p_size} bytes); skipped");
            continue;
        }
        let start = base + c_addr as usize;
        let pcs = base + p_addr as usize;
        // SAFETY: the sections are mapped at load bias + section address for this loaded object, and
        // have the sizes its section headers give; libFuzzer keeps the pointers for the process's life,
        // and the object is never unloaded (Python does not dlclose extensions).
        unsafe {
            __sanitizer_cov_8bit_counters_init(
                start as *mut u8,
                (start + c_size as usize) as *mut u8,
            );
            __sanitizer_cov_pcs_init(pcs as *const usize, (pcs + p_size as usize) as *const usize);
        }
        modules += 1;
        counters += c_size;
        names.push(
            std::path::Path::new(&path)
                .file_name()
                .map_or(path.clone(), |n| n.to_string_lossy().into_owned()),
        );
    }
    MODULES.store(modules, Ordering::Relaxed);
    // Our own region, with a synthetic PC table (libFuzzer wants one PC per counter).
    let table: Vec<usize> = (0..SIGNATURE_SLOTS)
        .flat_map(|i| [0x7000_0000_0000 + i, 0])
        .collect();
    let table = Box::leak(table.into_boxed_slice());
    // SAFETY: the region and the leaked table live for the rest of the process; sizes match
    // (SIGNATURE_SLOTS counters, SIGNATURE_SLOTS (pc, flags) pairs).
    unsafe {
        let start = SIGNATURES.0.get() as *mut u8;
        __sanitizer_cov_8bit_counters_init(start, start.add(SIGNATURE_SLOTS));
        let pcs = table.as_ptr();
        __sanitizer_cov_pcs_init(pcs, pcs.add(table.len()));
    }
    format!(
        "{{\"native_modules\": {modules}, \"native_counters\": {counters}, \"objects\": [{}]}}",
        names
            .iter()
            .map(|n| format!("\"{}\"", n.replace('"', "'")))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
