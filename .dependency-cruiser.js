// The import direction between folders, checked by `make lint` (STYLE.md "Layers that
// build upward"). Run on the TypeScript sources:
//   npx depcruise --config .dependency-cruiser.js controller broker shared client cli test bench
// Every rule is an error: an import that breaks a layer fails the build.
'use strict';

const PRODUCTION = '^(controller|broker|shared|client|cli)/';

module.exports = {
  forbidden: [
    {
      name: 'raft-core-is-pure',
      comment:
        'controller/raft/ is the pure Raft core (etcd raft shape): it may import only ' +
        'controller/raft/ and shared/errors/. No node:* modules, no gRPC, no level, no other ' +
        'npm package: the driver owns disks, sockets and clocks.',
      severity: 'error',
      from: { path: '^controller/raft/' },
      to: { pathNot: '^(controller/raft|shared/errors)/' },
    },
    {
      name: 'shared-errors-is-pure',
      comment:
        'controller/raft/ imports shared/errors/, so shared/errors/ must stay as pure: ' +
        'otherwise the Raft core would reach node:* or npm packages through it.',
      severity: 'error',
      from: { path: '^shared/errors/' },
      to: { pathNot: '^shared/errors/' },
    },
    {
      name: 'shared-is-a-leaf',
      comment: 'shared/ is used by every layer, so it may not import any of them.',
      severity: 'error',
      from: { path: '^shared/' },
      to: { path: '^(controller|broker|client|cli)/' },
    },
    {
      name: 'raft-driver-below-controller-logic',
      comment:
        'controller/raft-driver/ runs Raft for any state machine: it knows nothing of ' +
        'metadata, the QuorumController or the gRPC API built on top of it.',
      severity: 'error',
      from: { path: '^controller/raft-driver/' },
      to: { path: '^(controller/(quorum|server)/|controller/controller-process|shared/metadata/)' },
    },
    {
      name: 'quorum-controller-has-no-io',
      comment:
        'controller/quorum/ (KRaft QuorumController analogue) generates records and replays ' +
        'them; it reaches Raft only through the MetadataLog interface it declares, never the ' +
        'driver, gRPC or disks directly.',
      severity: 'error',
      from: { path: '^controller/quorum/' },
      to: { path: '^(controller/(raft|raft-driver|server)/|controller/controller-process)|@grpc|^node_modules/level' },
    },
    {
      name: 'controller-server-uses-ports',
      comment: 'controller/server/ sees the driver and the QuorumController only through ports.ts.',
      severity: 'error',
      from: { path: '^controller/server/' },
      to: { path: '^controller/(raft|raft-driver|quorum)/' },
    },
    {
      name: 'controller-not-to-broker-client-cli',
      comment: 'The controller talks to brokers over gRPC only; it does not import their code.',
      severity: 'error',
      from: { path: '^controller/' },
      to: { path: '^(broker|client|cli)/' },
    },
    {
      name: 'broker-not-to-controller-cli',
      comment: 'Brokers know the controller only through shared/ (protos, metadata image).',
      severity: 'error',
      from: { path: '^broker/' },
      to: { path: '^(controller|cli)/' },
    },
    {
      name: 'broker-producer-below-replica',
      comment:
        'broker/producer/ (idempotent-producer state, producer ids) is used by the replica ' +
        'manager through the ProducerGuard seam it declares: it may import shared/, node:* and ' +
        'npm packages, and broker/log/ for types only; nothing else of broker/.',
      severity: 'error',
      from: { path: '^broker/producer/' },
      to: { path: '^broker/', pathNot: '^broker/(producer|log)/' },
    },
    {
      name: 'broker-producer-log-types-only',
      comment: 'broker/producer/ reads the log through its own ProducerLogReader interface: broker/log/ for types only.',
      severity: 'error',
      from: { path: '^broker/producer/' },
      to: { path: '^broker/log/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'broker-log-is-a-leaf',
      comment:
        'broker/log/ is the partition log: storage only. It imports nothing else of broker/ ' +
        '(no replication, no networking); the replica manager drives it.',
      severity: 'error',
      from: { path: '^broker/log/' },
      to: { path: '^broker/', pathNot: '^broker/log/' },
    },
    {
      name: 'broker-replica-below-server',
      comment:
        'broker/replica/ (ReplicaManager, Partition, fetchers) uses broker/log/ and the metadata ' +
        'follower types; it never imports the gRPC service (broker/server/), the idempotent ' +
        'producer implementation (broker/producer/: plugged in through ProducerGuardFactory) or ' +
        'the process wiring.',
      severity: 'error',
      from: { path: '^broker/replica/' },
      to: { path: '^broker/(server|producer)/|^broker/(broker-process|admin-proxy|broker-lifecycle|index)' },
    },
    {
      name: 'broker-server-through-replica',
      comment:
        'broker/server/ (the Broker gRPC service) reaches partitions only through broker/replica/; ' +
        'it does not touch broker/log/ or broker/producer/ directly, nor the process wiring.',
      severity: 'error',
      from: { path: '^broker/server/' },
      to: { path: '^broker/(log|producer)/|^broker/(broker-process|admin-proxy|broker-lifecycle|controller-channel|index)' },
    },
    {
      name: 'client-only-to-shared',
      comment: 'The client library may import only shared/ and npm packages (and node:*).',
      severity: 'error',
      from: { path: '^client/' },
      to: { pathNot: '^(client|shared|node_modules)/', dependencyTypesNot: ['core'] },
    },
    {
      name: 'production-not-to-test-or-bench',
      comment: 'controller, broker, shared, client and cli never import test/ or bench/.',
      severity: 'error',
      from: { path: PRODUCTION },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'production-not-to-dev-dependency',
      comment:
        'A devDependency (mocha, chai, testcontainers, typescript) is absent from a ' +
        'production install; production code may use it for types only.',
      severity: 'error',
      from: { path: PRODUCTION },
      to: { dependencyTypes: ['npm-dev'], dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-circular',
      comment: 'Import cycles hide the layering; move the shared part down a layer.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that cannot be resolved (typo, or a package missing from package.json).',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'no-non-package-json',
      comment: 'Import only packages named in package.json, not ones that happen to be hoisted.',
      severity: 'error',
      from: {},
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    // Resolve .ts imports the way tsc does, and count `import type` too: a type import from
    // node:* in controller/raft/ is still a dependency on Node.
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {
      extensions: ['.ts', '.d.ts', '.js', '.json'],
      exportsFields: ['exports'],
      conditionNames: ['require', 'node', 'default', 'types'],
      mainFields: ['main', 'types', 'typings'],
    },
  },
};
