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

static int64_t member_offset(Dwarf_Die *type, const char *member)
{
	Dwarf_Die child;
	if (dwarf_child(type, &child) != 0)
		return -1;
	do {
		if (dwarf_tag(&child) != DW_TAG_member)
			continue;
		const char *n = dwarf_diename(&child);
		if (!n || strcmp(n, member) != 0)
			continue;
		Dwarf_Attribute a;
		Dwarf_Word off;
		if (dwarf_attr(&child, DW_AT_data_member_location, &a) &&
		    dwarf_formudata(&a, &off) == 0)
			return off;
	} while (dwarf_siblingof(&child, &child) == 0);
	return -1;
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

static void read_dwarf(int fd, struct go_binary *info)
{
	Dwarf *dw = dwarf_begin(fd, DWARF_C_READ);
	Dwarf_Off off = 0, next;
	size_t hsize;

	if (!dw)
		return;
	info->has_dwarf = true;
	info->m_procid_off = info->m_alllink_off = -1;
	while (dwarf_nextcu(dw, off, &next, &hsize, NULL, NULL, NULL) == 0) {
		Dwarf_Die cu, die;
		if (dwarf_offdie(dw, off + hsize, &cu) && dwarf_child(&cu, &die) == 0) {
			do {
				const char *n = dwarf_diename(&die);
				if (!n)
					continue;
				int tag = dwarf_tag(&die);
				if (tag == DW_TAG_variable && strcmp(n, "runtime.allm") == 0)
					info->allm_addr = variable_addr(&die);
				else if (tag == DW_TAG_structure_type && strcmp(n, "runtime.m") == 0 &&
					 info->m_procid_off < 0) {
					info->m_procid_off = member_offset(&die, "procid");
					info->m_alllink_off = member_offset(&die, "alllink");
				}
			} while (dwarf_siblingof(&die, &die) == 0);
		}
		off = next;
	}
	dwarf_end(dw);
}

int go_binary_inspect(const char *path, struct go_binary *info)
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
	if (info->is_go && elf_has_section(elf, ".debug_info"))
		read_dwarf(fd, info);
	return 0;
}
