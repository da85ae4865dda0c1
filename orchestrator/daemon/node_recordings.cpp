// The node's recordings of session views (node.h; the recording itself is
// recording.h).
#include "node.h"

namespace livemicro::orchestrator {

std::string
Node::recordings_directory () const
{
  return config_.recordings.directory.empty () ? state_dir_ + "/recordings" : config_.recordings.directory;
}

void
Node::may_record (const Principal &by) const
{
  // session_visible_to let the admin, the session and its microscope's owner through.
  if (!by.admin && by.session->role != "owner")
    throw Refusal{Reason::kForbidden, "only the microscope's owner (or the admin) records a view"};
}

RecordingStatus
Node::start_recording (const Principal &by, const std::string &session_id, const RecordingRequest &r)
{
  SessionRecord s = session_visible_to (by, session_id);
  const std::string detail = "session " + s.id + " (" + s.role + " view)";
  std::shared_ptr<ViewStream> view;
  try {
    may_record (by);
    if (auto it = recordings_.find (s.id); it != recordings_.end ())
      throw Refusal{Reason::kConflict, "this session's view is being recorded already (recording "
                                           + it->second->status ().id + "); stop it first"};
    view = view_of_session (s);
    std::string error = view_error_of_session (s);
    if (!view || !error.empty ())
      throw Refusal{Reason::kUnavailable, "the session's view is not available: "
                                              + (error.empty () ? "no view" : shown_to (by, error))};
  } catch (const Refusal &e) {
    refused (by, s.microscope, "recording.start", detail, e);
    throw;
  }
  RecordingStatus st;
  st.id = new_recording_id (s.role, g_get_real_time ());
  st.session = s.id;
  st.microscope = s.microscope;
  st.view = s.role;
  st.segment_s = r.segment_s.value_or (config_.recordings.segment_s);
  st.started_unix_us = g_get_real_time ();
  // The row first: nothing is recorded unless the audit log says so.
  durable ({audit_row (by, s.microscope, "recording.start", detail, "ok: recording " + st.id)}, nullptr);
  try {
    const std::string sid = s.id, microscope = s.microscope;
    recordings_[s.id] = std::make_unique<Recording> (view, st, recordings_directory (),
                                                     [this, sid, microscope] (const RecordingStatus &ended) {
                                                       AuditRecord row{0,
                                                                       g_get_real_time (),
                                                                       "livemicrod",
                                                                       "system",
                                                                       sid,
                                                                       microscope,
                                                                       "recording.stop",
                                                                       "recording " + ended.id,
                                                                       "failed: " + ended.error};
                                                       record (row);
                                                       recorded_[sid] = ended;
                                                       recordings_.erase (sid);
                                                     });
  } catch (const std::exception &e) {
    record (by, s.microscope, "recording.start", detail, std::string ("failed: ") + e.what ());
    throw Refusal{Reason::kUnavailable, "the recording cannot start: " + shown_to (by, e.what ())};
  }
  return recordings_[s.id]->status ();
}

void
Node::stop_recording (const Principal &by, const std::string &session_id, Recording::Ended done)
{
  SessionRecord s = session_visible_to (by, session_id);
  try {
    may_record (by);
    auto it = recordings_.find (s.id);
    if (it == recordings_.end ())
      throw Refusal{Reason::kNotFound, "this session's view is not being recorded"};
    if (it->second->stopping ())
      throw Refusal{Reason::kConflict, "this recording is being stopped already"};
  } catch (const Refusal &e) {
    refused (by, s.microscope, "recording.stop", "session " + s.id, e);
    throw;
  }
  stop_recording_of (by, s, "", std::move (done));
}

// Stop is always carried out; its row says how it ended.
void
Node::stop_recording_of (const Principal &by, const SessionRecord &s, const std::string &why,
                         Recording::Ended done)
{
  const std::string sid = s.id;
  std::string detail = "session " + s.id + " (" + s.role + " view)" + (why.empty () ? "" : ", " + why);
  recordings_[sid]->stop (
      [this, by, sid, microscope = s.microscope, detail, done] (const RecordingStatus &st) {
        record (by, microscope, "recording.stop", detail + ": recording " + st.id,
                (st.error.empty () ? "ok: " : "ok, " + st.error + ": ") + std::to_string (st.frames)
                    + " frames in " + std::to_string (st.segments) + " segments");
        recorded_[sid] = st;
        recordings_.erase (sid);
        if (done)
          done (st);
      });
}

void
Node::stop_all_recordings ()
{
  for (auto &[sid, rec] : recordings_) {
    RecordingStatus st = rec->status ();
    record (AuditRecord{0, g_get_real_time (), "livemicrod", "system", sid, st.microscope, "recording.stop",
                        "recording " + st.id + ", the daemon stops", "ok"});
  }
  recordings_.clear (); // each finishes its last segment (bounded)
}

RecordingStatus
Node::recording_of (const Principal &by, const std::string &session_id) const
{
  SessionRecord s = session_visible_to (by, session_id);
  if (auto it = recordings_.find (s.id); it != recordings_.end ())
    return it->second->status ();
  if (auto it = recorded_.find (s.id); it != recorded_.end ())
    return it->second;
  throw Refusal{Reason::kNotFound, "this session's view has not been recorded"};
}

} // namespace livemicro::orchestrator
