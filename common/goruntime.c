/*
 * goruntime.c - see goruntime.h.
 *
 * A Go executable is recognised by its .go.buildinfo section, which the
 * linker writes even into stripped binaries. DWARF, when present, gives the
 * runtime's variables and struct layouts.
 */
#include "goruntime.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>

#include "util.h"

static void elf_endp(Elf **e)
{
	if (*e)
		elf_end(*e);
}

static bool elf_has_section(Elf *elf, const char *name)
{
	size_t shstrndx;
	Elf_Scn *scn = NULL;

	if (elf_getshdrstrndx(elf, &shstrndx) != 0)
		return false;
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr sh;
		if (!gelf_getshdr(scn, &sh))
			continue;
		const char *n = elf_strptr(elf, shstrndx, sh.sh_name);
		if (n && strcmp(n, name) == 0)
			return true;
	}
	return false;
}

/*
 * Go writes a global's location as a plain block holding DW_OP_addr, which
 * dwarf_getlocation() refuses in a DWARF 4 unit; read the block directly.
 */
static uint64_t variable_addr(Dwarf_Die *var)
{
	Dwarf_Attribute a;
	Dwarf_Block b;
	uint64_t addr;

	if (!dwarf_attr(var, DW_AT_location, &a) || dwarf_formblock(&a, &b) != 0 ||
	    b.length != 9 || b.data[0] != DW_OP_addr)
		return 0;
	memcpy(&addr, b.data + 1, sizeof(addr));
	return addr;
}

/* ---------- finding the DWARF ---------- */

const char *go_debug_source_name(enum go_debug_source s)
{
	switch (s) {
	case GO_DEBUG_EXE:
		return "in the executable";
	case GO_DEBUG_BUILD_ID:
		return "by build-id";
	case GO_DEBUG_DEBUGLINK:
		return "by .gnu_debuglink";
	case GO_DEBUG_CONFIG:
		return "debug_file";
	case GO_DEBUG_NONE:
		break;
	}
	return "none";
}

#define NT_GO_BUILDID 4 /* Go's own note, "Go" owner: the linker writes it even with -s -w */

/*
 * The identity a debug file must share with its executable: the GNU
 * build-id when the linker wrote one, else Go's build ID (objcopy
 * --only-keep-debug keeps both notes).
 */
static void elf_identity(Elf *elf, char *out, size_t len)
{
	const void *bits;
	ssize_t n = dwelf_elf_gnu_build_id(elf, &bits);
	Elf_Scn *scn = NULL;

	out[0] = 0;
	if (n > 0) {
		size_t off = snprintf(out, len, "gnu:");
		for (ssize_t i = 0; i < n && off + 3 <= len; i++)
			off += snprintf(out + off, len - off, "%02x", ((const uint8_t *)bits)[i]);
		return;
	}
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr sh;
		Elf_Data *d;
		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE || !(d = elf_getdata(scn, NULL)))
			continue;
		GElf_Nhdr nh;
		size_t pos = 0, name_off, desc_off;
		while ((pos = gelf_getnote(d, pos, &nh, &name_off, &desc_off)) > 0) {
			/* Go writes the name "Go" in a 4-byte field: namesz 4. */
			if (nh.n_type == NT_GO_BUILDID && nh.n_namesz >= 3 &&
			    memcmp((char *)d->d_buf + name_off, "Go", 3) == 0) {
				snprintf(out, len, "go:%.*s", (int)nh.n_descsz,
					 (char *)d->d_buf + desc_off);
				return;
			}
		}
	}
}

/* Is there DWARF in the file at path, and who is it (elf_identity)? */
static int elf_probe(const char *path, bool *has_dwarf, char *id, size_t idlen, char *link,
		     size_t linklen)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	elf_version(EV_CURRENT);
	__attribute__((cleanup(elf_endp))) Elf *elf = elf_begin(fd, ELF_C_READ, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF)
		return -ENOEXEC;
	*has_dwarf = elf_has_section(elf, ".debug_info");
	elf_identity(elf, id, idlen);
	if (link) {
		GElf_Word crc;
		const char *l = dwelf_elf_gnu_debuglink(elf, &crc);
		snprintf(link, linklen, "%s", l ? l : "");
	}
	return 0;
}

static void dwfl_endp(Dwfl **d)
{
	if (*d)
		dwfl_end(*d);
}

/*
 * libdwfl's own search: dwfl_standard_find_debuginfo tries the build-id
 * directory first, then the debuglink names along debuginfo_path, and
 * checks each candidate (build-id, or the link's CRC when there is none).
 */
static int find_standard(const char *exe, const char *root, struct go_debuginfo *out)
{
	char path[4096 + 16];
	char *pathp = path;
	const Dwfl_Callbacks cb = {
	    .find_elf = dwfl_build_id_find_elf,
	    .find_debuginfo = dwfl_standard_find_debuginfo,
	    .section_address = dwfl_offline_section_address,
	    .debuginfo_path = &pathp,
	};
	const char *debugfile = NULL;
	Dwarf_Addr bias;

	/* "" is the executable's own directory, ".debug" a subdirectory of it. */
	snprintf(path, sizeof(path), ":.debug:%s", root);
	__attribute__((cleanup(dwfl_endp))) Dwfl *dwfl = dwfl_begin(&cb);
	if (!dwfl)
		return -ENOMEM;
	dwfl_report_begin(dwfl);
	Dwfl_Module *mod = dwfl_report_offline(dwfl, "exe", exe, -1);
	dwfl_report_end(dwfl, NULL, NULL);
	if (!mod || !dwfl_module_getdwarf(mod, &bias))
		return 0;
	dwfl_module_info(mod, NULL, NULL, NULL, NULL, NULL, NULL, &debugfile);
	if (!debugfile || strcmp(debugfile, exe) == 0)
		return 0;
	snprintf(out->path, sizeof(out->path), "%s", debugfile);
	out->source = strstr(debugfile, "/.build-id/") ? GO_DEBUG_BUILD_ID : GO_DEBUG_DEBUGLINK;
	return 1;
}

/* The configured debug file, refused by name unless it is the executable's. */
static int find_configured(const char *debug_file, struct go_debuginfo *out, char *why,
			   size_t whylen)
{
	char id[sizeof(out->build_id)];
	bool has_dwarf;
	int r = elf_probe(debug_file, &has_dwarf, id, sizeof(id), NULL, 0);

	if (r < 0) {
		snprintf(why, whylen, "debug_file %s: %s", debug_file,
			 r == -ENOEXEC ? "not an ELF file" : strerror(-r));
		return 0;
	}
	if (!has_dwarf) {
		snprintf(why, whylen, "debug_file %s has no DWARF", debug_file);
		return 0;
	}
	if (!out->build_id[0] || strcmp(id, out->build_id) != 0) {
		snprintf(why, whylen,
			 "debug_file %s refused: its build-id is %s, the executable's is %s",
			 debug_file, id[0] ? id : "(none)",
			 out->build_id[0] ? out->build_id : "(none)");
		return 0;
	}
	snprintf(out->path, sizeof(out->path), "%s", debug_file);
	out->source = GO_DEBUG_CONFIG;
	return 1;
}

/*
 * libdwfl passes over a candidate that is not the executable's without a
 * word; name the ones that exist, so an operator sees why a debug file that
 * is there was not used.
 */
static void name_refused(const char *exe, const char *root, const char *link, const char *id,
			 char *buf, size_t len)
{
	_cleanup_free_ char *dir = strdup(exe);
	char cand[4][4096 + 512];
	size_t n = 0, off = 0;

	buf[0] = 0;
	if (!dir || !strrchr(dir, '/'))
		return; /* libdwfl looks beside absolute paths only */
	*strrchr(dir, '/') = 0;
	if (strncmp(id, "gnu:", 4) == 0 && strlen(id) > 6)
		snprintf(cand[n++], sizeof(cand[0]), "%s/.build-id/%.2s/%s.debug", root, id + 4,
			 id + 6);
	if (link[0]) {
		snprintf(cand[n++], sizeof(cand[0]), "%s/%s", dir, link);
		snprintf(cand[n++], sizeof(cand[0]), "%s/.debug/%s", dir, link);
		snprintf(cand[n++], sizeof(cand[0]), "%s%s/%s", root, dir, link);
	}
	for (size_t i = 0; i < n && off < len; i++) {
		char other[128];
		bool has_dwarf;
		if (elf_probe(cand[i], &has_dwarf, other, sizeof(other), NULL, 0) < 0)
			continue;
		off += snprintf(buf + off, len - off, "; refused %s (build-id %s%s)", cand[i],
				other[0] ? other : "(none)",
				!has_dwarf ? ", no DWARF" : strcmp(other, id) == 0 ? ", CRC differs" : "");
	}
}

int go_debuginfo_find(const char *exe, const char *debug_file, const char *debug_root,
		      struct go_debuginfo *out)
{
	const char *root = debug_root ? debug_root : GO_DEBUG_ROOT_DEFAULT;
	char link[256], conf_why[sizeof(out->why) / 2] = "";
	bool has_dwarf;
	int r;

	memset(out, 0, sizeof(*out));
	r = elf_probe(exe, &has_dwarf, out->build_id, sizeof(out->build_id), link, sizeof(link));
	if (r < 0)
		return r;
	if (has_dwarf) {
		snprintf(out->path, sizeof(out->path), "%s", exe);
		out->source = GO_DEBUG_EXE;
		return 0;
	}
	r = find_standard(exe, root, out);
	if (r != 0)
		return r < 0 ? r : 0;
	if (debug_file && find_configured(debug_file, out, conf_why, sizeof(conf_why)))
		return 0;
	char refused[sizeof(out->why) / 2];
	bool gnu = strncmp(out->build_id, "gnu:", 4) == 0;
	name_refused(exe, root, link, out->build_id, refused, sizeof(refused));
	char by_id[512] = "no GNU build-id", by_link[512] = "no .gnu_debuglink";
	if (gnu)
		snprintf(by_id, sizeof(by_id), "none under %s/.build-id for build-id %s", root,
			 out->build_id + 4);
	if (link[0])
		snprintf(by_link, sizeof(by_link), "none named %s beside it, in .debug/ or under %s",
			 link, root);
	snprintf(out->why, sizeof(out->why), "no DWARF in %s; %s; %s%s%s%s%s", exe, by_id,
		 by_link, debug_file ? "" : "; no debug_file", refused, conf_why[0] ? "; " : "",
		 conf_why);
	return 0;
}

/* ---------- the full layout, for live capture ---------- */

struct named_die {
	const char *name;
	Dwarf_Die die;
	bool found;
};

struct layout_scan {
	struct named_die types[8];
	size_t n_types;
	struct named_die vars[16];
	size_t n_vars;
	struct named_die consts[32];
	size_t n_consts;
};

static void want(struct named_die *arr, size_t *n, const char *name)
{
	arr[(*n)++] = (struct named_die){.name = name};
}

static void scan_cu_children(Dwarf_Die *cu, struct layout_scan *s)
{
	Dwarf_Die die;
	if (dwarf_child(cu, &die) != 0)
		return;
	do {
		const char *n = dwarf_diename(&die);
		if (!n || strncmp(n, "runtime.", 8) != 0)
			continue;
		struct named_die *arr;
		size_t cnt;
		switch (dwarf_tag(&die)) {
		case DW_TAG_structure_type:
			arr = s->types, cnt = s->n_types;
			break;
		case DW_TAG_variable:
			arr = s->vars, cnt = s->n_vars;
			break;
		case DW_TAG_constant:
			arr = s->consts, cnt = s->n_consts;
			break;
		default:
			continue;
		}
		for (size_t i = 0; i < cnt; i++)
			if (!arr[i].found && strcmp(arr[i].name, n) == 0) {
				arr[i].die = die;
				arr[i].found = true;
			}
	} while (dwarf_siblingof(&die, &die) == 0);
}

/* The one walk over every compile unit, for the restore's few names and the full layout alike. */
static void scan_dwarf(Dwarf *dw, struct layout_scan *s)
{
	Dwarf_Off off = 0, next;
	size_t hsize;

	while (dwarf_nextcu(dw, off, &next, &hsize, NULL, NULL, NULL) == 0) {
		Dwarf_Die cu;
		if (dwarf_offdie(dw, off + hsize, &cu))
			scan_cu_children(&cu, s);
		off = next;
	}
}

static bool type_of(Dwarf_Die *die, Dwarf_Die *type)
{
	Dwarf_Attribute a;
	if (!dwarf_attr(die, DW_AT_type, &a) || !dwarf_formref_die(&a, type))
		return false;
	while (dwarf_tag(type) == DW_TAG_typedef)
		if (!dwarf_attr(type, DW_AT_type, &a) || !dwarf_formref_die(&a, type))
			return false;
	return true;
}

static bool find_member(Dwarf_Die *type, const char *name, Dwarf_Die *member)
{
	if (dwarf_child(type, member) != 0)
		return false;
	do {
		const char *n = dwarf_diename(member);
		if (dwarf_tag(member) == DW_TAG_member && n && strcmp(n, name) == 0)
			return true;
	} while (dwarf_siblingof(member, member) == 0);
	return false;
}

/* Resolve a dotted member path ("stack.lo") to its offset and size. */
static bool resolve_field(Dwarf_Die *type, const char *path, struct go_field *f)
{
	char buf[128];
	Dwarf_Die cur = *type, member, mtype;
	int64_t off = 0;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *save, *part = strtok_r(buf, ".", &save); part; part = strtok_r(NULL, ".", &save)) {
		Dwarf_Attribute a;
		Dwarf_Word o;
		if (!find_member(&cur, part, &member) ||
		    !dwarf_attr(&member, DW_AT_data_member_location, &a) ||
		    dwarf_formudata(&a, &o) != 0 || !type_of(&member, &mtype))
			return false;
		off += o;
		cur = mtype;
	}
	int size = dwarf_bytesize(&cur);
	f->off = off;
	f->size = size > 0 ? size : 8;
	return true;
}

static struct named_die *lookup(struct named_die *arr, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(arr[i].name, name) == 0)
			return arr[i].found ? &arr[i] : NULL;
	return NULL;
}

struct field_spec {
	const char *type, *path;
	struct go_field *out;
};

static int resolve_fields(struct layout_scan *s, const struct field_spec *fs, size_t n, char *err,
			  size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		struct named_die *t = lookup(s->types, s->n_types, fs[i].type);
		if (!t) {
			snprintf(err, errlen, "DWARF has no type %s", fs[i].type);
			return -ENOENT;
		}
		if (!resolve_field(&t->die, fs[i].path, fs[i].out)) {
			snprintf(err, errlen, "DWARF type %s has no field %s", fs[i].type,
				 fs[i].path);
			return -ENOENT;
		}
	}
	return 0;
}

static int resolve_var(struct layout_scan *s, const char *name, uint64_t *out, bool required,
		       char *err, size_t errlen)
{
	struct named_die *v = lookup(s->vars, s->n_vars, name);
	*out = v ? variable_addr(&v->die) : 0;
	if (!*out && required) {
		snprintf(err, errlen, "DWARF has no address for variable %s", name);
		return -ENOENT;
	}
	return 0;
}

static int resolve_const(struct layout_scan *s, const char *name, uint64_t *out, char *err,
			 size_t errlen)
{
	struct named_die *c = lookup(s->consts, s->n_consts, name);
	Dwarf_Attribute a;
	Dwarf_Sword sv;
	if (!c || !dwarf_attr(&c->die, DW_AT_const_value, &a) || dwarf_formsdata(&a, &sv) != 0) {
		snprintf(err, errlen, "DWARF has no constant %s", name);
		return -ENOENT;
	}
	*out = (uint64_t)sv;
	return 0;
}

static void layout_wants(struct layout_scan *s)
{
	static const char *types[] = {"runtime.mheap", "runtime.mspan", "runtime.m", "runtime.g",
				      "runtime.heapArena"};
	static const char *vars[] = {"runtime.mheap_", "runtime.allm", "runtime.allgs",
				     "runtime.gcphase", "runtime.vdsoClockgettimeSym",
				     "runtime.vdsoGettimeofdaySym", "runtime.epfd",
				     "runtime.netpollBreakRd"};
	static const char *consts[] = {"runtime._PageSize", "runtime.heapArenaBytes",
				       "runtime.arenaBaseOffsetUintptr", "runtime._GCoff",
				       "runtime.mSpanInUse", "runtime.mSpanManual",
				       "runtime._Gdead", "runtime._Grunnable",
				       "runtime._Gwaiting", "runtime._Gsyscall",
				       "runtime._Gpreempted", "runtime.arenaL1Bits",
				       "runtime.arenaL2Bits", "runtime.minSizeForMallocHeader"};
	for (size_t i = 0; i < ARRAY_SIZE(types); i++)
		want(s->types, &s->n_types, types[i]);
	for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
		want(s->vars, &s->n_vars, vars[i]);
	for (size_t i = 0; i < ARRAY_SIZE(consts); i++)
		want(s->consts, &s->n_consts, consts[i]);
}

/*
 * Optional: what the reachability scan needs (capture/reach.c). A Go
 * release without one of these fields gets no scan, and ships every
 * object of its in-use spans as before.
 */
static void layout_reach(struct layout_scan *s, struct go_layout *l)
{
	const struct field_spec fields[] = {
		{"runtime.mspan", "freeindex", &l->span_freeindex},
		{"runtime.mspan", "nelems", &l->span_nelems},
		{"runtime.mspan", "allocBits", &l->span_allocbits},
		{"runtime.mspan", "sweepgen", &l->span_sweepgen},
		{"runtime.mspan", "specials", &l->span_specials},
		{"runtime.mspan", "spanclass", &l->span_spanclass},
		{"runtime.mheap", "sweepgen", &l->heap_sweepgen},
	};
	char err[128];

	l->reach_ok = resolve_fields(s, fields, ARRAY_SIZE(fields), err, sizeof(err)) == 0;
	struct named_die *span = lookup(s->types, s->n_types, "runtime.mspan");
	l->span_largetype.off = -1;
	l->malloc_headers = span && resolve_field(&span->die, "largeType", &l->span_largetype);
	if (!span || !resolve_field(&span->die, "limit", &l->span_limit))
		l->span_limit.off = -1;
	/* With malloc headers the size above which objects carry one must be known. */
	if (l->malloc_headers &&
	    resolve_const(s, "runtime.minSizeForMallocHeader", &l->min_size_malloc_header, err,
			  sizeof(err)) < 0)
		l->reach_ok = false;
}

static int layout_resolve(struct layout_scan *s, struct go_layout *l, char *err, size_t errlen)
{
	const struct field_spec fields[] = {
		{"runtime.mheap", "lock.key", &l->heap_lock_key},
		{"runtime.mheap", "allspans", &l->heap_allspans},
		{"runtime.mheap", "allArenas", &l->heap_allarenas},
		{"runtime.mheap", "arenas", &l->heap_arenas},
		{"runtime.mspan", "startAddr", &l->span_start},
		{"runtime.mspan", "npages", &l->span_npages},
		{"runtime.mspan", "state.s", &l->span_state},
		{"runtime.mspan", "elemsize", &l->span_elemsize},
		{"runtime.m", "procid", &l->m_procid},
		{"runtime.m", "alllink", &l->m_alllink},
		{"runtime.m", "locks", &l->m_locks},
		{"runtime.m", "mallocing", &l->m_mallocing},
		{"runtime.m", "g0", &l->m_g0},
		{"runtime.m", "gsignal", &l->m_gsignal},
		{"runtime.m", "curg", &l->m_curg},
		{"runtime.g", "atomicstatus", &l->g_status},
		{"runtime.g", "stack.lo", &l->g_stack_lo},
		{"runtime.g", "stack.hi", &l->g_stack_hi},
		{"runtime.g", "sched.sp", &l->g_sched_sp},
		{"runtime.g", "syscallsp", &l->g_syscallsp},
	};
	int r = resolve_fields(s, fields, ARRAY_SIZE(fields), err, errlen);
	if (r < 0)
		return r;
	layout_reach(s, l);
	/* Optional: lets the capture drop heap bitmap pages of free arena pages (Go <= 1.21). */
	struct named_die *ha = lookup(s->types, s->n_types, "runtime.heapArena");
	l->arena_bitmap.off = -1;
	if (!ha || !resolve_field(&ha->die, "bitmap", &l->arena_bitmap) ||
	    resolve_const(s, "runtime.arenaL1Bits", &l->arena_l1_bits, err, errlen) < 0 ||
	    resolve_const(s, "runtime.arenaL2Bits", &l->arena_l2_bits, err, errlen) < 0)
		l->arena_bitmap.off = -1;
	if ((r = resolve_var(s, "runtime.mheap_", &l->mheap, true, err, errlen)) < 0 ||
	    (r = resolve_var(s, "runtime.allm", &l->allm, true, err, errlen)) < 0 ||
	    (r = resolve_var(s, "runtime.allgs", &l->allgs, true, err, errlen)) < 0 ||
	    (r = resolve_var(s, "runtime.gcphase", &l->gcphase, true, err, errlen)) < 0)
		return r;
	resolve_var(s, "runtime.vdsoClockgettimeSym", &l->vdso_clock_gettime, false, err, errlen);
	resolve_var(s, "runtime.vdsoGettimeofdaySym", &l->vdso_gettimeofday, false, err, errlen);
	resolve_var(s, "runtime.epfd", &l->epfd, false, err, errlen);
	resolve_var(s, "runtime.netpollBreakRd", &l->netpoll_break_rd, false, err, errlen);
	struct named_die *gp = lookup(s->vars, s->n_vars, "runtime.gcphase");
	Dwarf_Die t;
	l->gcphase_size = gp && type_of(&gp->die, &t) && dwarf_bytesize(&t) > 0 ? dwarf_bytesize(&t) : 4;

	if ((r = resolve_const(s, "runtime._PageSize", &l->page_size, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime.heapArenaBytes", &l->arena_bytes, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime.arenaBaseOffsetUintptr", &l->arena_base_offset, err,
			       errlen)) < 0 ||
	    (r = resolve_const(s, "runtime._GCoff", &l->gc_off, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime.mSpanInUse", &l->span_in_use, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime.mSpanManual", &l->span_manual, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime._Gdead", &l->g_dead, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime._Grunnable", &l->g_runnable, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime._Gwaiting", &l->g_waiting, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime._Gsyscall", &l->g_syscall, err, errlen)) < 0 ||
	    (r = resolve_const(s, "runtime._Gpreempted", &l->g_preempted, err, errlen)) < 0)
		return r;
	return 0;
}

int go_layout_read(const char *path, struct go_layout *l, char *err, size_t errlen)
{
	struct layout_scan s = {0};
	int r;

	memset(l, 0, sizeof(*l));
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %m", path);
		return -errno;
	}
	Dwarf *dw = dwarf_begin(fd, DWARF_C_READ);
	if (!dw) {
		snprintf(err, errlen, "%s has no DWARF debug information", path);
		return -ENODATA;
	}
	layout_wants(&s);
	scan_dwarf(dw, &s);
	r = layout_resolve(&s, l, err, errlen);
	dwarf_end(dw);
	return r;
}

/* ---------- what a restore needs ---------- */

/*
 * What a restore needs of the runtime (allm and two fields of m), found by
 * the same walk as the full layout below: one DWARF walker for both.
 */
static void read_dwarf(int fd, struct go_binary *info)
{
	struct layout_scan s = {0};
	struct named_die *m, *allm;
	struct go_field f;
	Dwarf *dw = dwarf_begin(fd, DWARF_C_READ);

	if (!dw)
		return;
	info->has_dwarf = true;
	want(s.types, &s.n_types, "runtime.m");
	want(s.vars, &s.n_vars, "runtime.allm");
	scan_dwarf(dw, &s);
	m = lookup(s.types, s.n_types, "runtime.m");
	allm = lookup(s.vars, s.n_vars, "runtime.allm");
	info->allm_addr = allm ? variable_addr(&allm->die) : 0;
	info->m_procid_off = m && resolve_field(&m->die, "procid", &f) ? f.off : -1;
	info->m_alllink_off = m && resolve_field(&m->die, "alllink", &f) ? f.off : -1;
	dwarf_end(dw);
}

static int read_dwarf_file(const char *path, struct go_binary *info)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	__attribute__((cleanup(elf_endp))) Elf *elf = elf_begin(fd, ELF_C_READ, NULL);
	if (elf && elf_kind(elf) == ELF_K_ELF && elf_has_section(elf, ".debug_info"))
		read_dwarf(fd, info);
	return 0;
}

int go_binary_inspect(const char *path, const char *dwarf_file, struct go_binary *info)
{
	memset(info, 0, sizeof(*info));
	info->m_procid_off = info->m_alllink_off = -1;

	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	elf_version(EV_CURRENT);
	__attribute__((cleanup(elf_endp))) Elf *elf = elf_begin(fd, ELF_C_READ, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF)
		return 0;
	info->is_go = elf_has_section(elf, ".go.buildinfo");
	if (!info->is_go)
		return 0;
	if (dwarf_file && strcmp(dwarf_file, path) != 0)
		return read_dwarf_file(dwarf_file, info);
	if (elf_has_section(elf, ".debug_info"))
		read_dwarf(fd, info);
	return 0;
}
