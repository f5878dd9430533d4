// Checks docker-compose.yml and the Dockerfiles it builds, parsed for real (no Docker engine
// here): services, healthchecks, volumes, Redis safety (R23), the GPU reservations and the
// env wiring between the API, the workers and Postgres/Redis.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse } from 'yaml';

const ROOT = resolve(__dirname, '../../..');
const COMPOSE_FILE = join(ROOT, 'docker-compose.yml');

type Env = Record<string, string | undefined>;
type Scalar = string | number | boolean | null;

interface DeviceRequest {
  driver?: string;
  count?: number | string;
  device_ids?: string[];
  capabilities?: string[];
}

interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string | string[];
  environment?: Record<string, Scalar> | string[];
  volumes?: (string | { type?: string; source?: string; target?: string })[];
  ports?: (string | number | { target?: number | string; published?: number | string })[];
  healthcheck?: { test?: string | string[] };
  depends_on?: string[] | Record<string, { condition?: string }>;
  deploy?: { resources?: { reservations?: { devices?: DeviceRequest[] } } };
  profiles?: string[];
}

interface ComposeFile {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

/** Compose variable interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}. */
function interpolate(value: string, env: Env): string {
  const pattern =
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g;
  return value.replace(
    pattern,
    (match: string, braced?: string, op?: string, arg?: string, bare?: string): string => {
      if (match === '$$') return '$';
      const name = braced ?? bare ?? '';
      const v = env[name];
      const unsetOrEmpty = v === undefined || v === '';
      switch (op) {
        case ':-':
          return unsetOrEmpty ? interpolate(arg ?? '', env) : v;
        case '-':
          return v === undefined ? interpolate(arg ?? '', env) : v;
        case ':?':
        case '?':
          if (op === ':?' ? unsetOrEmpty : v === undefined)
            throw new Error(`required variable ${name}: ${arg}`);
          return v ?? '';
        case undefined:
        default:
          return v ?? '';
      }
    },
  );
}

function interpolateDeep(node: unknown, env: Env): unknown {
  if (typeof node === 'string') return interpolate(node, env);
  if (Array.isArray(node)) return node.map((item) => interpolateDeep(item, env));
  if (node !== null && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateDeep(v, env)]));
  }
  return node;
}

/** Loads docker-compose.yml as Compose would: YAML merge keys on, variables from `env` only. */
function loadCompose(env: Env = {}): ComposeFile {
  const raw: unknown = parse(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true });
  return interpolateDeep(raw, env) as ComposeFile;
}

function service(compose: ComposeFile, name: string): Service {
  const svc = compose.services[name];
  if (!svc) throw new Error(`service ${name} missing from docker-compose.yml`);
  return svc;
}

function envOf(svc: Service): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(svc.environment)) {
    for (const entry of svc.environment) {
      const eq = entry.indexOf('=');
      if (eq > 0) out[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
  } else if (svc.environment) {
    for (const [k, v] of Object.entries(svc.environment)) out[k] = v === null ? '' : String(v);
  }
  return out;
}

function commandTokens(svc: Service): string[] {
  if (Array.isArray(svc.command)) return svc.command.map(String);
  return (svc.command ?? '').split(/\s+/).filter(Boolean);
}

function flagValue(tokens: string[], flag: string): string | undefined {
  const i = tokens.indexOf(flag);
  return i >= 0 ? tokens[i + 1] : undefined;
}

function healthTest(svc: Service): string {
  const test = svc.healthcheck?.test;
  return Array.isArray(test) ? test.join(' ') : (test ?? '');
}

function mounts(svc: Service): { source: string; target: string }[] {
  return (svc.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { source: v.source ?? '', target: v.target ?? '' };
    const [source = '', target = ''] = v.split(':');
    return { source, target };
  });
}

function isNamedVolume(source: string): boolean {
  return source !== '' && !/^[./~]/.test(source);
}

function dependsOn(svc: Service): Record<string, string | undefined> {
  const deps = svc.depends_on;
  if (!deps) return {};
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((d) => [d, 'service_started']));
  return Object.fromEntries(Object.entries(deps).map(([k, v]) => [k, v.condition]));
}

function gpuDevices(svc: Service): DeviceRequest[] {
  return svc.deploy?.resources?.reservations?.devices ?? [];
}

function workerNames(compose: ComposeFile): string[] {
  return Object.keys(compose.services).filter((n) => n === 'worker' || n.startsWith('worker-'));
}

function buildOf(svc: Service): { context: string; dockerfile: string } {
  if (typeof svc.build === 'string') return { context: svc.build, dockerfile: 'Dockerfile' };
  return { context: svc.build?.context ?? '.', dockerfile: svc.build?.dockerfile ?? 'Dockerfile' };
}

interface Stage {
  image: string;
  name?: string;
  instructions: string[];
}

/** Parses FROM stages, resolving global ARG defaults in image references. */
function parseDockerfile(path: string): Stage[] {
  const lines = readFileSync(path, 'utf8')
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const globalArgs: Env = {};
  const stages: Stage[] = [];
  for (const line of lines) {
    const [keyword = '', ...rest] = line.split(/\s+/);
    const kw = keyword.toUpperCase();
    if (kw === 'ARG' && stages.length === 0) {
      const [name = '', ...def] = (rest[0] ?? '').split('=');
      globalArgs[name] = def.join('=').replace(/^["']|["']$/g, '');
    } else if (kw === 'FROM') {
      const args = rest.filter((a) => !a.startsWith('--'));
      const image = interpolate(args[0] ?? '', globalArgs);
      const asIndex = args.findIndex((a) => a.toUpperCase() === 'AS');
      stages.push({ image, name: asIndex >= 0 ? args[asIndex + 1] : undefined, instructions: [] });
    } else if (stages.length > 0) {
      stages[stages.length - 1]?.instructions.push(line);
    }
  }
  return stages;
}

/** The base image of the final stage, following `FROM <earlier stage>` chains. */
function finalBaseImage(stages: Stage[]): string {
  let image = stages[stages.length - 1]?.image ?? '';
  for (let hops = 0; hops < stages.length; hops++) {
    const stage = stages.find((s) => s.name === image);
    if (!stage) break;
    image = stage.image;
  }
  return image;
}

function finalStage(stages: Stage[]): string[] {
  return stages[stages.length - 1]?.instructions ?? [];
}

describe('docker-compose.yml', () => {
  const compose = loadCompose();

  it('defines postgres, redis, api, worker and the one-shot migrate service', () => {
    expect(Object.keys(compose.services)).toEqual(
      expect.arrayContaining(['postgres', 'redis', 'api', 'worker', 'migrate']),
    );
  });

  it('postgres: postgres:16, a named data volume and a pg_isready healthcheck', () => {
    const pg = service(compose, 'postgres');
    expect(pg.image).toMatch(/^postgres:16(\b|$)/);
    expect(healthTest(pg)).toContain('pg_isready');
    const data = mounts(pg).find((m) => m.target === '/var/lib/postgresql/data');
    expect(data).toBeDefined();
    expect(isNamedVolume(data!.source)).toBe(true);
    expect(Object.keys(compose.volumes ?? {})).toContain(data!.source);
  });

  it('redis: redis:7 with AOF on, noeviction, a named /data volume and a PING healthcheck (R23)', () => {
    const redis = service(compose, 'redis');
    expect(redis.image).toMatch(/^redis:7(\b|$)/);
    const tokens = commandTokens(redis);
    expect(tokens[0]).toBe('redis-server');
    expect(flagValue(tokens, '--appendonly')).toBe('yes');
    expect(flagValue(tokens, '--maxmemory-policy')).toBe('noeviction');
    expect(healthTest(redis)).toMatch(/redis-cli.*ping/i);
    const data = mounts(redis).find((m) => m.target === '/data');
    expect(data).toBeDefined();
    expect(isNamedVolume(data!.source)).toBe(true);
    expect(Object.keys(compose.volumes ?? {})).toContain(data!.source);
  });

  it('worker reserves one NVIDIA GPU through deploy.resources.reservations.devices', () => {
    const devices = gpuDevices(service(compose, 'worker'));
    expect(devices).toHaveLength(1);
    expect(devices[0]).toMatchObject({
      driver: 'nvidia',
      capabilities: expect.arrayContaining(['gpu']),
    });
    expect(Number(devices[0].count)).toBe(1);
    expect(envOf(service(compose, 'worker')).LORAFLEET_BACKEND).toBe('gpu');
  });

  it('runs one worker per GPU: every worker service holds exactly one GPU, and no two share one', () => {
    const claimed: string[] = [];
    for (const name of workerNames(compose)) {
      const devices = gpuDevices(service(compose, name));
      expect({ name, devices: devices.length }).toEqual({ name, devices: 1 });
      const d = devices[0];
      expect(d.driver).toBe('nvidia');
      expect(d.capabilities).toContain('gpu');
      if (d.device_ids !== undefined) {
        expect(d.count).toBeUndefined();
        expect(d.device_ids).toHaveLength(1);
        claimed.push(String(d.device_ids[0]));
      } else {
        // `count: 1` is served by the first GPU, device 0.
        expect(Number(d.count)).toBe(1);
        claimed.push('0');
      }
      expect(envOf(service(compose, name)).LORAFLEET_BACKEND).toBe('gpu');
      // Extra workers must not start unless asked for (single-GPU nodes have no GPU 1).
      if (name !== 'worker') expect(service(compose, name).profiles?.length).toBeGreaterThan(0);
    }
    expect(new Set(claimed).size).toBe(claimed.length);
  });

  describe.each([
    ['defaults', {}],
    [
      'custom credentials',
      { POSTGRES_USER: 'alice', POSTGRES_PASSWORD: 's3cret', POSTGRES_DB: 'fleet' },
    ],
  ])('env wiring (%s)', (_label, env: Env) => {
    const c = loadCompose(env);
    const pgEnv = envOf(service(c, 'postgres'));
    const clients = ['api', 'migrate', ...workerNames(c)];

    it('postgres has a user, a password and a database', () => {
      expect(pgEnv.POSTGRES_USER).toBeTruthy();
      expect(pgEnv.POSTGRES_PASSWORD).toBeTruthy();
      expect(pgEnv.POSTGRES_DB).toBeTruthy();
      if (env.POSTGRES_USER) expect(pgEnv.POSTGRES_USER).toBe(env.POSTGRES_USER);
    });

    it.each(clients)(
      '%s: DATABASE_URL points at the postgres service with its credentials',
      (name) => {
        const raw = envOf(service(c, name)).DATABASE_URL;
        expect(raw).toBeDefined();
        const url = new URL(raw);
        expect(['postgres:', 'postgresql:']).toContain(url.protocol);
        expect(url.hostname).toBe('postgres');
        expect(['', '5432']).toContain(url.port);
        expect(decodeURIComponent(url.username)).toBe(pgEnv.POSTGRES_USER);
        expect(decodeURIComponent(url.password)).toBe(pgEnv.POSTGRES_PASSWORD);
        expect(decodeURIComponent(url.pathname)).toBe(`/${pgEnv.POSTGRES_DB}`);
      },
    );

    it.each(clients)('%s: REDIS_URL points at the redis service', (name) => {
      const raw = envOf(service(c, name)).REDIS_URL;
      expect(raw).toBeDefined();
      const url = new URL(raw);
      expect(url.protocol).toBe('redis:');
      expect(url.hostname).toBe('redis');
      expect(['', '6379']).toContain(url.port);
    });
  });

  it('api and workers see the base models directory where LORAFLEET_MODELS_DIR says', () => {
    for (const name of ['api', ...workerNames(compose)]) {
      const svc = service(compose, name);
      const dir = envOf(svc).LORAFLEET_MODELS_DIR;
      expect({ name, dir }).toEqual({ name, dir: expect.stringMatching(/^\//) });
      expect(mounts(svc).map((m) => m.target)).toContain(dir);
    }
  });

  it('migrate runs `npm run db:migrate` once Postgres is healthy', () => {
    const migrate = service(compose, 'migrate');
    expect(commandTokens(migrate).join(' ')).toContain('npm run db:migrate');
    expect(dependsOn(migrate).postgres).toBe('service_healthy');
  });

  it('api starts after healthy postgres and redis and a successful migration, and checks /healthz', () => {
    const api = service(compose, 'api');
    const deps = dependsOn(api);
    expect(deps.postgres).toBe('service_healthy');
    expect(deps.redis).toBe('service_healthy');
    expect(deps.migrate).toBe('service_completed_successfully');
    expect(healthTest(api)).toContain('/healthz');
    const port = envOf(api).PORT ?? '3000';
    const published = (api.ports ?? []).map((p) =>
      typeof p === 'object' ? String(p.target) : String(p).split(':').pop(),
    );
    expect(published).toContain(port);
  });

  it('workers start after healthy postgres and redis and a successful migration', () => {
    for (const name of workerNames(compose)) {
      const deps = dependsOn(service(compose, name));
      expect({ name, deps }).toMatchObject({
        name,
        deps: {
          postgres: 'service_healthy',
          redis: 'service_healthy',
          migrate: 'service_completed_successfully',
        },
      });
    }
  });
});

describe('Dockerfiles referenced by docker-compose.yml', () => {
  const compose = loadCompose();
  const built = Object.entries(compose.services).filter(([, svc]) => svc.build !== undefined);

  it('every build points at a Dockerfile that exists', () => {
    expect(built.map(([name]) => name)).toEqual(
      expect.arrayContaining(['api', 'worker', 'migrate']),
    );
    for (const [name, svc] of built) {
      const { context, dockerfile } = buildOf(svc);
      const path = resolve(ROOT, context, dockerfile);
      expect({ name, exists: existsSync(path) }).toEqual({ name, exists: true });
    }
  });

  const dockerfileOf = (name: string): Stage[] => {
    const { context, dockerfile } = buildOf(service(compose, name));
    return parseDockerfile(resolve(ROOT, context, dockerfile));
  };

  it('the worker image is based on a CUDA 11.x + cuDNN 8 image (libtensorflow 2.9.1 for tfjs-node-gpu 4.x)', () => {
    expect(finalBaseImage(dockerfileOf('worker'))).toMatch(
      /^nvidia\/cuda:11\.\d+(\.\d+)*-cudnn8-(runtime|devel)-/,
    );
  });

  it.each([
    ['api', 'apps/api/dist/main.js'],
    ['worker', 'apps/worker/dist/main.js'],
  ])('the %s image is multi-stage, runs %s, and not as root', (name, entry) => {
    const stages = dockerfileOf(name);
    expect(stages.length).toBeGreaterThan(1);
    const last = finalStage(stages);
    const cmd = last.filter((l) => /^CMD\s/i.test(l)).pop() ?? '';
    expect(cmd).toContain(entry);
    const user = last
      .filter((l) => /^USER\s/i.test(l))
      .pop()
      ?.split(/\s+/)[1];
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user!.split(':')[0]);
  });

  it('images build with `npm ci` and `npm run build`', () => {
    for (const name of ['api', 'worker']) {
      const runs = dockerfileOf(name)
        .flatMap((s) => s.instructions)
        .filter((l) => /^RUN\s/i.test(l))
        .join('\n');
      expect(runs).toMatch(/npm ci\b/);
      expect(runs).toMatch(/npm run build\b/);
    }
  });
});
