/**
 * How the Vulkan loader would find a driver on this node (issue 18): the ICD manifests it
 * reads, searched the way the loader searches, and, when there is none, the NVIDIA driver's
 * own Vulkan library, for which a manifest is written so the loader can still use it. Pure
 * file-system work: it runs before Dawn is loaded, so a node without Vulkan still gets a
 * report that says what is missing and how to fix it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

export interface IcdManifest {
  path: string;
  /** `ICD.library_path` as written (a bare soname is looked up by the dynamic linker). */
  libraryPath: string | null;
  /** The manifest names NVIDIA's library (libGLX_nvidia / libnvidia-vulkan-producer). */
  nvidia: boolean;
  /** Whether the library it names could be found on disk (bare sonames: in the linker's dirs). */
  libraryFound: boolean;
}

export interface IcdDiscovery {
  /** How the NVIDIA ICD was found, in words; null when it was not. */
  nvidiaFoundBy: string | null;
  /** Every manifest seen, in the loader's order. */
  manifests: IcdManifest[];
  /** Where was looked, in order. */
  searched: string[];
  /** Environment the GPU steps must run with (VK_DRIVER_FILES when a manifest was written). */
  env: Record<string, string>;
  /** The NVIDIA driver as the node reports it (null fields when absent). */
  driver: { version: string | null; libcuda: string | null; libGLXNvidia: string | null };
  /** What to do when no NVIDIA ICD was found; null otherwise. */
  fix: string | null;
}

const NVIDIA_LIBRARY = /libGLX_nvidia|libnvidia-vulkan/;

/** Directories the dynamic linker searches, plus where container toolkits put the driver. */
function libraryDirs(env: NodeJS.ProcessEnv): string[] {
  const dirs = (env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean);
  dirs.push(
    '/usr/lib/x86_64-linux-gnu',
    '/lib/x86_64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/nvidia/lib64',
    '/usr/local/nvidia/lib',
    // The NVIDIA GPU Operator's driver container mounts its root here on the host.
    '/run/nvidia/driver/usr/lib/x86_64-linux-gnu',
    '/run/nvidia/driver/usr/lib64',
  );
  return dirs;
}

/** `ldconfig -p`'s idea of where `soname` lives (covers custom ld.so.conf entries). */
function ldconfigLookup(soname: string): string | null {
  for (const ldconfig of ['/sbin/ldconfig', '/usr/sbin/ldconfig', 'ldconfig']) {
    const run = spawnSync(ldconfig, ['-p'], { encoding: 'utf8' });
    if (run.status !== 0 || !run.stdout) continue;
    for (const line of run.stdout.split('\n')) {
      const match = /^\s*(\S+) \(.*\) => (\S+)$/.exec(line);
      if (match && match[1] === soname && existsSync(match[2])) return match[2];
    }
    return null;
  }
  return null;
}

export function findSharedLibrary(soname: string, env: NodeJS.ProcessEnv): string | null {
  for (const dir of libraryDirs(env)) {
    const candidate = join(dir, soname);
    if (existsSync(candidate)) return candidate;
  }
  return ldconfigLookup(soname);
}

function readManifest(path: string, env: NodeJS.ProcessEnv): IcdManifest {
  let libraryPath: string | null = null;
  try {
    const json = JSON.parse(readFileSync(path, 'utf8')) as { ICD?: { library_path?: string } };
    libraryPath = json.ICD?.library_path ?? null;
  } catch {
    // An unreadable manifest is reported as one naming no library.
  }
  let libraryFound = false;
  if (libraryPath !== null) {
    libraryFound = libraryPath.includes('/')
      ? existsSync(isAbsolute(libraryPath) ? libraryPath : join(path, '..', libraryPath))
      : findSharedLibrary(libraryPath, env) !== null;
  }
  return {
    path,
    libraryPath,
    nvidia: libraryPath !== null && NVIDIA_LIBRARY.test(libraryPath),
    libraryFound,
  };
}

/** Manifests in `entry`: a file, or the *.json files of a directory (sorted, as the loader). */
function manifestsAt(entry: string): string[] {
  if (!existsSync(entry)) return [];
  if (statSync(entry).isDirectory()) {
    return readdirSync(entry)
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map((f) => join(entry, f));
  }
  return [entry];
}

/** The loader's search dirs when no override is set (XDG config, then data, as it does). */
function standardDirs(env: NodeJS.ProcessEnv): string[] {
  const config = (env.XDG_CONFIG_DIRS || '/etc/xdg').split(delimiter).filter(Boolean);
  const data = (env.XDG_DATA_DIRS || '/usr/local/share:/usr/share')
    .split(delimiter)
    .filter(Boolean);
  const dirs = [
    ...config.map((d) => join(d, 'vulkan', 'icd.d')),
    '/etc/vulkan/icd.d',
    ...data.map((d) => join(d, 'vulkan', 'icd.d')),
    '/usr/share/vulkan/icd.d',
  ];
  return dirs.filter((d, i) => dirs.indexOf(d) === i);
}

function driverVersion(): string | null {
  try {
    const text = readFileSync('/proc/driver/nvidia/version', 'utf8');
    const match = /Kernel Module\s+(?:for\s+\S+\s+)?([0-9.]+)/.exec(text);
    if (match) return match[1];
  } catch {
    // No kernel module visible (not an NVIDIA node, or a container without /proc/driver).
  }
  const smi = spawnSync('nvidia-smi', ['--query-gpu=driver_version', '--format=csv,noheader'], {
    encoding: 'utf8',
  });
  return smi.status === 0 ? smi.stdout.trim().split('\n')[0] || null : null;
}

/**
 * Finds the NVIDIA Vulkan ICD: `VK_DRIVER_FILES` / `VK_ICD_FILENAMES` (the loader reads only
 * those when set), then the standard directories, then the driver's own files (the GPU
 * Operator's driver root, and finally the driver library itself, for which a manifest is
 * written under `workDir`).
 */
export function discoverVulkanIcd(env: NodeJS.ProcessEnv, workDir: string): IcdDiscovery {
  const searched: string[] = [];
  const manifests: IcdManifest[] = [];
  const driver = {
    version: driverVersion(),
    libcuda: findSharedLibrary('libcuda.so.1', env),
    libGLXNvidia: findSharedLibrary('libGLX_nvidia.so.0', env),
  };
  const result = (nvidiaFoundBy: string | null, extraEnv: Record<string, string> = {}) => ({
    nvidiaFoundBy,
    manifests,
    searched,
    env: extraEnv,
    driver,
    fix: nvidiaFoundBy === null ? fixFor(driver, manifests) : null,
  });
  const take = (files: string[]) => {
    const read = files.map((f) => readManifest(f, env));
    manifests.push(...read);
    return read.find((m) => m.nvidia && m.libraryFound) ?? null;
  };

  for (const name of ['VK_DRIVER_FILES', 'VK_ICD_FILENAMES'] as const) {
    const value = env[name];
    if (!value) continue;
    searched.push(`${name}=${value}`);
    const hit = take(value.split(delimiter).filter(Boolean).flatMap(manifestsAt));
    // With an override set the loader looks nowhere else, so neither does this.
    return result(hit ? `${name} (${hit.path})` : null);
  }
  for (const dir of standardDirs(env)) {
    searched.push(dir);
    const hit = take(manifestsAt(dir));
    if (hit) return result(`${dir} (${hit.path})`);
  }
  for (const dir of [
    '/run/nvidia/driver/etc/vulkan/icd.d',
    '/run/nvidia/driver/usr/share/vulkan/icd.d',
  ]) {
    searched.push(dir);
    const hit = take(manifestsAt(dir));
    if (hit) {
      // Outside the loader's search path: point it there explicitly.
      return result(`the driver's own manifest in ${dir} (${hit.path}), via VK_DRIVER_FILES`, {
        VK_DRIVER_FILES: hit.path,
      });
    }
  }
  searched.push('libGLX_nvidia.so.0 (the driver library that implements Vulkan)');
  if (driver.libGLXNvidia !== null) {
    // The driver is there but its manifest is not (a container that mounted the library only,
    // or a driver unpacked by hand): write the manifest the driver ships, naming that file.
    mkdirSync(workDir, { recursive: true });
    const written = join(workDir, 'nvidia_icd.json');
    writeFileSync(
      written,
      `${JSON.stringify({ file_format_version: '1.0.0', ICD: { library_path: driver.libGLXNvidia, api_version: '1.3' } }, null, 2)}\n`,
    );
    manifests.push(readManifest(written, env));
    return result(
      `the driver's library ${driver.libGLXNvidia} (no manifest installed; wrote ${written}, used via VK_DRIVER_FILES)`,
      { VK_DRIVER_FILES: written },
    );
  }
  return result(null);
}

function fixFor(driver: IcdDiscovery['driver'], manifests: IcdManifest[]): string {
  const others = manifests.filter((m) => !m.nvidia).map((m) => m.path);
  const seen = others.length > 0 ? ` (only non-NVIDIA ICDs: ${others.join(', ')})` : '';
  if (driver.libcuda !== null) {
    return (
      `The NVIDIA driver is present (libcuda at ${driver.libcuda}${driver.version ? `, driver ${driver.version}` : ''}) ` +
      `but not its Vulkan part${seen}. In a container this means the graphics capability is missing: ` +
      `run it with NVIDIA_DRIVER_CAPABILITIES=compute,utility,graphics (or all), e.g. ` +
      `\`docker run --gpus all -e NVIDIA_DRIVER_CAPABILITIES=all …\`, so the toolkit mounts ` +
      `libGLX_nvidia.so.0 and nvidia_icd.json. On the host, install the driver's Vulkan ICD ` +
      `(Debian/Ubuntu: libnvidia-gl-<version>; .run installer: without --no-opengl-files), or ` +
      `point VK_DRIVER_FILES at an nvidia_icd.json.`
    );
  }
  return (
    `No NVIDIA driver was found (no libcuda.so.1, no libGLX_nvidia.so.0)${seen}. Install the ` +
    `NVIDIA driver with its Vulkan ICD, or in a container use the NVIDIA Container Toolkit with ` +
    `--gpus all and NVIDIA_DRIVER_CAPABILITIES=all.`
  );
}
