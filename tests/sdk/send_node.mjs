// Sends one known story through the real posthog-node and
// @segment/analytics-node SDKs (see send_python.py for the story).
//
// Usage: node send_node.mjs HOST WRITE_KEY

import { PostHog } from 'posthog-node'
import { Analytics } from '@segment/analytics-node'

const [host, key] = process.argv.slice(2)
const failures = []
const props = (prefix, i) => ({ i, client: prefix, nested: { ok: true } })

async function posthogStory(prefix) {
  const posthog = new PostHog(key, { host, flushAt: 4, flushInterval: 0 })
  posthog.on('error', (error) => failures.push(`posthog-node: ${error}`))
  const [anon, user, device2] = [`${prefix}-anon`, `${prefix}-user`, `${prefix}-device2`]
  for (let i = 0; i < 5; i++) posthog.capture({ distinctId: anon, event: 'sdk event', properties: props(prefix, i) })
  posthog.capture({
    distinctId: user,
    event: '$identify',
    properties: { $anon_distinct_id: anon, $set: { email: `${prefix}@example.com` } },
  })
  for (let i = 5; i < 10; i++) posthog.capture({ distinctId: user, event: 'sdk event', properties: props(prefix, i) })
  for (let i = 10; i < 13; i++) posthog.capture({ distinctId: device2, event: 'sdk event', properties: props(prefix, i) })
  posthog.alias({ distinctId: user, alias: device2 })
  posthog.groupIdentify({ groupType: 'company', groupKey: `${prefix}-acme`, properties: { name: 'Acme', seats: 5 }, distinctId: user })
  await posthog.shutdown()
}

async function segmentStory(prefix) {
  const segment = new Analytics({ writeKey: key, host, maxEventsInBatch: 4, flushInterval: 100 })
  segment.on('error', (error) => failures.push(`analytics-node: ${JSON.stringify(error)}`))
  const [anon, user, device2] = [`${prefix}-anon`, `${prefix}-user`, `${prefix}-device2`]
  for (let i = 0; i < 5; i++) segment.track({ anonymousId: anon, event: 'sdk event', properties: props(prefix, i) })
  segment.identify({ userId: user, anonymousId: anon, traits: { email: `${prefix}@example.com` } })
  for (let i = 5; i < 10; i++) segment.track({ userId: user, event: 'sdk event', properties: props(prefix, i) })
  for (let i = 10; i < 13; i++) segment.track({ anonymousId: device2, event: 'sdk event', properties: props(prefix, i) })
  segment.alias({ userId: user, previousId: device2 })
  segment.group({ userId: user, groupId: `${prefix}-acme`, traits: { name: 'Acme', seats: 5 } })
  await segment.closeAndFlush({ timeout: 20000 })
}

await posthogStory('node-posthog')
await segmentStory('node-segment')
if (failures.length > 0) {
  console.error(`SDK errors: ${failures.join('; ')}`)
  process.exit(1)
}
console.log('sent')
